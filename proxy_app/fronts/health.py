"""GET /health: liveness of the proxy."""

from __future__ import annotations

from aiohttp import web

from proxy_app.exchange import new_request_id


async def health(request: web.Request) -> web.Response:
    """Report that the proxy is up."""
    return web.json_response({"status": "ok", "service": "proxy"}, headers={"X-Request-Id": new_request_id()})
