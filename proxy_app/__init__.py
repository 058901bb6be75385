"""The aiohttp proxy on :5231: OpenAI-compatible forwarding, metering, archive.

Imports `shared` and aiohttp; never Flask, never `admin_app`.
"""

from __future__ import annotations

from aiohttp import web

from shared.settings import Settings


def create_app(settings: Settings) -> web.Application:
    """Build the proxy application for `settings`."""
    from proxy_app.app import build_app

    return build_app(settings)
