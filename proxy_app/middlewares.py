"""Error shaping and client-key auth for every proxy route."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy_app.app_keys import CLIENT_KEY, STATE
from proxy_app.auth import authenticate, extract_key
from proxy_app.errors import ProxyError, error_response_for
from proxy_app.exchange import new_request_id

log = logging.getLogger("nexusai.proxy")
access_log = logging.getLogger("nexusai.proxy.access")

# Routes served without a client key (/metrics checks the operator's token itself). The
# WebSocket authenticates itself after the upgrade (header, query or first message), so that
# browsers are told why a key was refused.
PUBLIC_PATHS = frozenset({"/health", "/health/ready", "/", "/metrics"})
OPERATOR_PREFIX = "/admin/"  # the operator's endpoints check ADMIN_TOKEN themselves, as /metrics does
LATE_AUTH_PATHS = frozenset({"/ws/chat"})

_HTTP_CODES = {
    400: ("invalid_request_error", "bad_request"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def _refusal(
    request: web.Request, err: ProxyError, started: float, headers: dict[str, str] | None = None
) -> web.Response:
    # Requests refused before routing get an id too, so a client can quote it against the log.
    request_id = new_request_id()
    access_log.info(
        "%s http %s %s status=%d code=%s latency_ms=%.1f",
        request_id, request.method, request.path, err.status, err.code, (time.perf_counter() - started) * 1000.0,
    )
    return error_response_for(request, err, {**(headers or {}), "X-Request-Id": request_id})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into OpenAI's error shape; never an HTML page."""
    started = time.perf_counter()
    try:
        return await handler(request)
    except ProxyError as exc:
        return _refusal(request, exc, started)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        type_, code = _HTTP_CODES.get(exc.status, ("invalid_request_error", None))
        message = exc.reason if exc.status != 404 else f"Unknown path {request.path}."
        err = ProxyError(exc.status, message, type=type_, code=code)
        return _refusal(request, err, started, {k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        error = ProxyError(500, "Internal error in the gateway.", type="server_error", code="internal_error")
        return error_response_for(request, error, {"X-Request-Id": new_request_id()})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the client key against the in-memory snapshot before any handler runs."""
    path = request.path
    if path in PUBLIC_PATHS or path in LATE_AUTH_PATHS or path.startswith(OPERATOR_PREFIX):
        return await handler(request)
    raw = extract_key(request.headers, request.query)
    request[CLIENT_KEY] = authenticate(request.app[STATE].config.snapshot, raw)
    return await handler(request)
