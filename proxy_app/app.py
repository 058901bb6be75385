"""Application assembly: app keys, cleanup contexts, middlewares, routes."""

from __future__ import annotations

from aiohttp import web

from proxy_app.keys import SETTINGS
from proxy_app.routes import setup_routes
from shared.settings import Settings


def build_app(settings: Settings) -> web.Application:
    """Assemble the proxy application."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    setup_routes(app)
    return app
