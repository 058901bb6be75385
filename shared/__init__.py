"""Framework-free core shared by the admin and the proxy.

Holds the settings, the typed SQLAlchemy models, database helpers, key
hashing, token counting, the usage writer and the archive writer. Nothing in
this package may import Flask or aiohttp.
"""
