"""Client-key generation, hashing and the hints that stand in for secrets."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "nx-"


def generate_client_key() -> str:
    """A new client key: `nx-` + 43 url-safe random characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 hex digest of a client key: the only form we store."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_hint(key: str) -> str:
    """A displayable hint such as `nx-…3f9a` that does not reveal the key."""
    if not key:
        return ""
    tail = key[-4:] if len(key) >= 12 else ""
    head = key[:3] if len(key) >= 12 else key[:1]
    return f"{head}…{tail}"
