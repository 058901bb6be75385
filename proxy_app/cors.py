"""CORS for browsers on other origins (CORS_ORIGINS); installed only when it is set.

Preflights are answered here, before authentication (a browser sends no key with them);
every response to an allowed origin names it and exposes the headers a client reads:
the request id, the cost and the rate-limit figures. Off unless CORS_ORIGINS is set.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy_app.app_keys import SETTINGS
from proxy_app.errors import ProxyError
from proxy_app.exchange import new_request_id

ALLOW_METHODS = "GET, POST, OPTIONS"
# What browsers' clients send: the openai and anthropic JS SDKs' headers among them.
ALLOW_HEADERS = (
    "Authorization, Content-Type, X-API-Key, X-Conversation-Id, OpenAI-Organization, OpenAI-Project, "
    "OpenAI-Beta, anthropic-version, anthropic-beta, anthropic-dangerous-direct-browser-access, "
    "X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, X-Stainless-Arch, X-Stainless-Runtime, "
    "X-Stainless-Runtime-Version, X-Stainless-Retry-Count, X-Stainless-Timeout"
)
EXPOSE_HEADERS = (
    "X-Request-Id, X-Conversation-Id, X-Request-Cost, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, "
    "X-RateLimit-Reset, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, "
    "x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens"
)
MAX_AGE_S = "600"


def origin_allowed(allowed: tuple[str, ...], origin: str | None) -> bool:
    """Whether a browser origin may call the proxy."""
    if not origin or not allowed:
        return False
    return allowed == ("*",) or origin.lower() in allowed


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights without a key; everything else goes on."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return await handler(request)
    allowed = request.app[SETTINGS].cors_origins
    origin = request.headers.get("Origin")
    if not allowed:
        return await handler(request)  # CORS is off: an OPTIONS request like any other
    if not origin_allowed(allowed, origin):
        raise ProxyError(403, "This origin may not call the gateway (CORS_ORIGINS).", type="permission_error",
                         code="origin_not_allowed")
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers") or ALLOW_HEADERS,
        "Access-Control-Max-Age": MAX_AGE_S,
        "X-Request-Id": new_request_id(),
    })


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the CORS headers of an answer to an allowed origin."""
    headers = response.headers
    allowed = request.app[SETTINGS].cors_origins
    origin = request.headers.get("Origin")
    if origin is not None and origin_allowed(allowed, origin):
        headers["Access-Control-Allow-Origin"] = "*" if allowed == ("*",) else origin
        headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    headers.add("Vary", "Origin")
