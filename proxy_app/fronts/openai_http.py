"""The OpenAI HTTP wire format every OpenAI-shaped front renders to: one JSON response, or SSE.

`forward` is the handler every HTTP front uses (the Messages front too, with its own renderer).

Chat completions, legacy completions and embeddings answer alike: the reply (or the
upstream's error) with our headers, or an event stream passed through as the upstream's
own bytes, with the usage chunk the gateway asked for dropped unless the client asked too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from proxy_app.app_keys import CLIENT_KEY, STATE
from proxy_app.errors import ProxyError, bad_request
from proxy_app.exchange import ClientGone, Exchange, Outcome, Renderer, WholeReply, open_exchange
from proxy_app.exchange.api import Api
from proxy_app.fronts.json_body import read_json
from proxy_app.hub import Piece

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
# Response headers of the upstream that are safe and useful to pass on.
# (Never the upstream's rate-limit headers: they describe our provider account, not the client's key.)
PASS_HEADERS = ("openai-processing-ms", "openai-version")


def model_of(body: Any) -> str:
    """The `model` of a body that must be a JSON object naming one (400 otherwise)."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a non-empty string.", param="model")
    return model


def stream_flag(body: dict[str, Any]) -> bool:
    """`stream` (a boolean, default false) and, for a stream, a well-formed `stream_options`."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if stream and options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", param="stream_options")
    return stream


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether the client itself asked a stream for its usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def with_stream_usage(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The body with `stream_options.include_usage` for a stream, so it is never recorded as free."""
    if not stream:
        return body
    return {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}


def cost_header(outcome: Outcome) -> str:
    """X-Request-Cost in plain decimal notation (Decimal's str() would give "9E-7")."""
    return format(outcome.cost_usd.normalize(), "f") if outcome.cost_usd else "0"


class OpenAIHttpRenderer:
    """One JSON response, or an SSE stream, in OpenAI's shapes."""

    __slots__ = ("request", "wants_usage", "response", "_stream")

    def __init__(self, request: web.Request, client_wants_usage: bool) -> None:
        self.request = request
        self.wants_usage = client_wants_usage
        self.response: web.StreamResponse | None = None
        self._stream: web.StreamResponse | None = None

    async def start_stream(self, exchange: Exchange) -> None:
        """Send the SSE response head."""
        out = web.StreamResponse(status=200, headers={**SSE_HEADERS, **exchange.ids()})
        self.response = self._stream = out
        try:
            await out.prepare(self.request)
        except ConnectionResetError:
            raise ClientGone from None

    async def pieces(self, exchange: Exchange, pieces: list[Piece], final: bool) -> None:
        """The events of one upstream read in one write: as prompt as one per event, far cheaper."""
        parts: list[bytes] = []
        for piece in pieces:
            obj = piece.obj
            if obj is not None and not self.wants_usage and obj.get("usage"):
                if not obj.get("choices"):
                    continue  # the usage-only chunk we asked for; the client did not
                # Some upstreams attach usage to a content chunk: strip just that field.
                parts.append(b"data: " + orjson.dumps({k: v for k, v in obj.items() if k != "usage"}) + b"\n\n")
                continue
            parts.append(piece.raw)
        if parts:
            await self._write(parts[0] if len(parts) == 1 else b"".join(parts))

    async def finished(self, exchange: Exchange, outcome: Outcome) -> None:
        """End the chunked response."""
        assert self._stream is not None
        try:
            await self._stream.write_eof()
        except ConnectionResetError:
            raise ClientGone from None

    async def whole(self, exchange: Exchange, reply: WholeReply, outcome: Outcome) -> None:
        """The reply (or the upstream's error) as it came, with our headers."""
        headers = exchange.ids()
        headers["X-Request-Cost"] = cost_header(outcome)
        for name in PASS_HEADERS:
            if name in reply.headers:
                headers[name] = reply.headers[name]
        self.response = web.Response(status=reply.status, body=reply.body, content_type="application/json",
                                     headers=headers)

    async def failed(self, exchange: Exchange, error: ProxyError, outcome: Outcome) -> None:
        """Before the stream: an error response. Mid-stream: an error event, then the end."""
        if self._stream is None:
            self.response = error.response(exchange.ids())
            return
        try:
            await self._stream.write(b"data: " + orjson.dumps({"error": error.body()}) + b"\n\n")
            await self._stream.write_eof()
        except ConnectionResetError:
            pass

    async def _write(self, data: bytes) -> None:
        assert self._stream is not None
        try:
            await self._stream.write(data)
        except ConnectionResetError:
            raise ClientGone from None


class HttpRenderer(Renderer, Protocol):
    """A renderer that leaves the HTTP response it made for the handler to return."""

    response: web.StreamResponse | None


def _default_renderer(request: web.Request, exchange: Exchange) -> OpenAIHttpRenderer:
    return OpenAIHttpRenderer(request, wants_usage(exchange.client_body))


async def forward(request: web.Request, api: Api,
                  renderer_for: Callable[[web.Request, Exchange], HttpRenderer] = _default_renderer,
                  passed_headers: tuple[str, ...] = ()) -> web.StreamResponse:
    """The handler of every HTTP API: the body in, through the exchange, rendered out.

    `passed_headers`: client headers a provider serving the API natively gets as they came.
    """
    state = request.app[STATE]
    body = await read_json(request, state.settings)
    exchange = await open_exchange(
        state, api, request[CLIENT_KEY], body,
        conversation_header=request.headers.get("X-Conversation-Id"), transport="http",
    )
    for name in passed_headers:
        value = request.headers.get(name)
        if value is not None:
            exchange.client_headers[name] = value
    renderer = renderer_for(request, exchange)
    await exchange.run(renderer)
    assert renderer.response is not None  # every way run() returns has rendered something
    return renderer.response
