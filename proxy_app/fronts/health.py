"""GET /health: liveness of the proxy; GET / for clients that probe the base URL."""

from __future__ import annotations

from aiohttp import web

from proxy_app.exchange import new_request_id


async def health(request: web.Request) -> web.Response:
    """Report that the proxy is up."""
    return web.json_response({"status": "ok", "service": "proxy"}, headers={"X-Request-Id": new_request_id()})


async def root(request: web.Request) -> web.Response:
    """`GET`/`HEAD /`: what answers here (clients such as Claude Code probe it before their first call)."""
    return web.json_response({"service": "nexusai-proxy", "status": "ok"}, headers={"X-Request-Id": new_request_id()})
