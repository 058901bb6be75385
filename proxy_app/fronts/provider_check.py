"""`POST /admin/providers/{provider_id}/test`: one tiny chat request to one provider, for the console.

The operator's endpoint (ADMIN_TOKEN as Bearer; without one, loopback only). It
goes through the exchange like any client request, scoped to that provider and
one of its models, so what it proves is what clients get: the secrets the proxy
decrypted, the adapter of the provider's kind, its URL and proxy, its circuit.
It is recorded like any request (cost included), with no client key (key id 0 here, NULL in the row).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from proxy_app.app_keys import SETTINGS, STATE
from proxy_app.auth import check_operator
from proxy_app.config import KeyCfg
from proxy_app.errors import ProxyError
from proxy_app.exchange import Exchange, Outcome, WholeReply, new_request_id, open_exchange
from proxy_app.fronts.chat import CHAT
from proxy_app.hub import Piece

TEST_KEY_ID = 0  # no client key has id 0: the recorder writes the row with no key
TEST_PROMPT = "Reply with the single word OK."
REPLY_SHOWN_CHARS = 200


class _TestRenderer:
    """Keeps what the one JSON reply (or the failure) said."""

    def __init__(self) -> None:
        self.status = 0
        self.reply: str | None = None
        self.error: str | None = None
        self.outcome: Outcome | None = None

    async def start_stream(self, exchange: Exchange) -> None:
        """Never called: the test request does not stream."""
        raise AssertionError("a provider test does not stream")

    async def pieces(self, exchange: Exchange, pieces: list[Piece], final: bool) -> None:
        """Never called: the test request does not stream."""
        raise AssertionError("a provider test does not stream")

    async def finished(self, exchange: Exchange, outcome: Outcome) -> None:
        """Never called: the test request does not stream."""
        raise AssertionError("a provider test does not stream")

    async def whole(self, exchange: Exchange, reply: WholeReply, outcome: Outcome) -> None:
        """The upstream answered: its status, and its text or error message."""
        self.status, self.outcome = reply.status, outcome
        if reply.status < 400 and reply.obj is not None:
            choices = reply.obj.get("choices") or [{}]
            message = choices[0].get("message") or {} if isinstance(choices[0], dict) else {}
            content = message.get("content") if isinstance(message, dict) else None
            self.reply = str(content)[:REPLY_SHOWN_CHARS] if content is not None else ""
        else:
            self.error = _error_message(reply.body)

    async def failed(self, exchange: Exchange, error: ProxyError, outcome: Outcome) -> None:
        """No answer: why."""
        self.status, self.error, self.outcome = error.status, error.message, outcome


def _error_message(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:REPLY_SHOWN_CHARS].decode("utf-8", "replace")
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:REPLY_SHOWN_CHARS]
    return body[:REPLY_SHOWN_CHARS].decode("utf-8", "replace")


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status, headers={"X-Request-Id": body.get("request_id") or new_request_id()})


async def provider_test(request: web.Request) -> web.Response:
    """Send one tiny chat request to the provider (`?model=` picks which of its models) and say how it went."""
    settings = request.app[SETTINGS]
    try:
        check_operator(request.headers, request.remote, settings.admin_token)
    except ProxyError as exc:
        return exc.response()
    state = request.app[STATE]
    raw_id = request.match_info["provider_id"]
    provider_id = int(raw_id) if raw_id.isdigit() and len(raw_id) < 10 else -1
    snapshot = state.config.snapshot
    routes = sorted((r for rs in snapshot.routes_by_model.values() for r in rs if r.provider.id == provider_id),
                    key=lambda r: r.model_name)
    wanted = request.query.get("model")
    if wanted is not None:
        routes = [r for r in routes if r.model_name == wanted]
    if not routes:
        why = (f"Provider {raw_id} is not served by this proxy with {'model ' + wanted if wanted else 'any model'}: "
               "it is disabled, has no enabled model, was created less than a config reload ago, or its "
               "secrets cannot be decrypted (see the proxy's log).")
        return _json(404, {"ok": False, "error": why, "status": None})
    route = routes[0]
    key = KeyCfg(id=TEST_KEY_ID, name="provider test", hint="", provider_ids=frozenset({provider_id}),
                 models=frozenset({route.model_name}), enabled=True, expires_at=None, archive_messages=False)
    body = {"model": route.model_name, "messages": [{"role": "user", "content": TEST_PROMPT}]}
    started = time.perf_counter()
    renderer = _TestRenderer()
    try:
        exchange = await open_exchange(state, CHAT, key, body, conversation_header=None, transport="http")
    except ProxyError as exc:
        return _json(200, {"ok": False, "provider_id": provider_id, "provider": route.provider.name,
                           "model": route.model_name, "status": exc.status, "error": exc.message})
    await exchange.run(renderer)
    return _json(200, {
        "ok": 200 <= renderer.status < 400,
        "provider_id": provider_id,
        "provider": route.provider.name,
        "model": route.model_name,
        "upstream_model": route.upstream_name,
        "status": renderer.status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "reply": renderer.reply,
        "error": renderer.error,
        "request_id": exchange.request_id,
        "cost_usd": format(renderer.outcome.cost_usd.normalize(), "f") if renderer.outcome else None,
    })
