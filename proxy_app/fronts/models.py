"""GET /v1/models and /v1/models/{id}: the models this key may use, in OpenAI's shapes or Anthropic's.

A request carrying `anthropic-version` (the Anthropic SDK, Claude Code) gets Anthropic's list
and model objects; any other OpenAI's.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web

from proxy_app.app_keys import CLIENT_KEY, STATE
from proxy_app.config import Route
from proxy_app.errors import ProxyError, echo, speaks_anthropic
from proxy_app.exchange import new_request_id
from proxy_app.exchange.routing import allowed_models

access_log = logging.getLogger("nexusai.proxy.access")


def _model(route: Route, anthropic: bool) -> dict[str, Any]:
    if anthropic:  # Anthropic's model object, for clients that send `anthropic-version` (Claude Code)
        created = datetime.fromtimestamp(route.created, timezone.utc).isoformat().replace("+00:00", "Z")
        return {"type": "model", "id": route.model_name, "display_name": route.model_name, "created_at": created}
    return {"id": route.model_name, "object": "model", "created": route.created, "owned_by": route.provider.name}


def _answer(request: web.Request, started: float, body: dict[str, Any]) -> web.Response:
    request_id = new_request_id()
    key = request[CLIENT_KEY]
    access_log.info("%s http %s %s key=%s status=200 latency_ms=%.1f", request_id, request.method, request.path,
                    key.hint, (time.perf_counter() - started) * 1000.0)
    return web.Response(body=orjson.dumps(body), content_type="application/json",
                        headers={"X-Request-Id": request_id})


async def list_models(request: web.Request) -> web.Response:
    """List the models the caller's key may use; `owned_by` is the serving provider."""
    started = time.perf_counter()
    snapshot = request.app[STATE].config.snapshot
    anthropic = speaks_anthropic(request)
    data = [_model(route, anthropic) for route in allowed_models(snapshot, request[CLIENT_KEY])]
    if anthropic:
        return _answer(request, started, {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                                          "last_id": data[-1]["id"] if data else None})
    return _answer(request, started, {"object": "list", "data": data})


async def retrieve_model(request: web.Request) -> web.Response:
    """One model, if the caller's key may use it; else 404 as OpenAI answers an unknown model."""
    started = time.perf_counter()
    wanted = request.match_info["model"]
    snapshot = request.app[STATE].config.snapshot
    for route in allowed_models(snapshot, request[CLIENT_KEY]):
        if route.model_name == wanted:
            return _answer(request, started, _model(route, speaks_anthropic(request)))
    raise ProxyError(404, f"The model '{echo(wanted)}' does not exist or you do not have access to it.",
                     code="model_not_found", param="model")
