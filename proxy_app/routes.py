"""The proxy's route table."""

from __future__ import annotations

from aiohttp import web

from proxy_app.health import health


def setup_routes(app: web.Application) -> None:
    """Register every route of the proxy."""
    app.router.add_get("/health", health)
