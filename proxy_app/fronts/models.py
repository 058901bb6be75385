"""GET /v1/models: the models this key may use, in OpenAI's list format."""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy_app.app_keys import CLIENT_KEY, STATE
from proxy_app.exchange.routing import allowed_models


async def list_models(request: web.Request) -> web.Response:
    """List the models the caller's key may use; `owned_by` is the serving provider."""
    snapshot = request.app[STATE].config.snapshot
    data = [
        {"id": route.model_name, "object": "model", "created": route.created, "owned_by": route.provider.name}
        for route in allowed_models(snapshot, request[CLIENT_KEY])
    ]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")
