"""Application assembly: app keys, cleanup contexts, middlewares, routes."""

from __future__ import annotations

from aiohttp import web

from proxy_app.app_keys import SETTINGS, WS_SESSIONS
from proxy_app.cors import add_cors_headers, cors_middleware
from proxy_app.fronts.ws_chat import close_websockets
from proxy_app.lifecycle import services_ctx
from proxy_app.middlewares import auth_middleware, error_middleware
from proxy_app.routes import setup_routes
from shared.settings import Settings


def build_app(settings: Settings) -> web.Application:
    """Assemble the proxy application."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # CORS costs nothing when off: neither its middleware nor its signal is installed.
        middlewares=[error_middleware, *([cors_middleware] if settings.cors_origins else []), auth_middleware],
    )
    app[SETTINGS] = settings
    app[WS_SESSIONS] = set()
    app.cleanup_ctx.append(services_ctx)
    app.on_shutdown.append(close_websockets)
    if settings.cors_origins:
        app.on_response_prepare.append(add_cors_headers)
    setup_routes(app)
    return app
