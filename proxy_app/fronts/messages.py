"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API, as JSON or SSE.

To a provider serving `messages` natively (the `anthropic` kind) the request passes through
(but for `model`) with the client's `anthropic-version` and `anthropic-beta`, and its reply
or events come back as its own bytes. To any other provider it goes as chat completions
(`fronts/messages_chat.py`) and the reply is rendered back into Anthropic's message or
events. Errors are always in Anthropic's shape, `{"type":"error","error":{"type","message"}}`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from proxy_app.app_keys import CLIENT_KEY, STATE
from proxy_app.errors import ProxyError, anthropic_error_bytes, anthropic_error_response, bad_request
from proxy_app.exchange import Exchange, Outcome, WholeReply, new_request_id
from proxy_app.exchange.routing import resolve
from proxy_app.exchange.tokens import TokenCounter, json_text_size
from proxy_app.fronts import messages_chat
from proxy_app.fronts.json_body import read_json
from proxy_app.fronts.openai_http import OpenAIHttpRenderer, cost_header, forward, model_of, stream_flag
from proxy_app.hub import Piece

access_log = logging.getLogger("nexusai.proxy.access")

ROLES = ("user", "assistant", "system")  # Claude Code 2.1 sends `system` turns among its messages
# The client's headers a native Anthropic upstream gets as they came.
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


def check_messages(body: Any) -> str:
    """The model of a body with a valid `messages` list (and `system`, `tools`); 400 otherwise."""
    model = model_of(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty list.", param="messages")
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request(f"'messages[{n}].role' must be one of {', '.join(ROLES)}.", param=f"messages[{n}]")
        content = message.get("content")
        if not isinstance(content, (str, list)) or (isinstance(content, list)
                                                     and not all(isinstance(b, dict) for b in content)):
            raise bad_request(f"'messages[{n}].content' must be a string or a list of content blocks.",
                              param=f"messages[{n}].content")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise bad_request("'system' must be a string or a list of text blocks.", param="system")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)):
        raise bad_request("'tools' must be a list of tools, each with a 'name'.", param="tools")
    return model


class MessagesTranslation:
    """The Messages API through chat completions."""

    def native_only(self, body: dict[str, Any]) -> str | None:
        """What needs a native upstream (documents, server tools, MCP servers)."""
        return messages_chat.native_only(body)

    def chat_body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """The request as chat completions."""
        return messages_chat.chat_body(body, stream)


class MessagesApi:
    """Anthropic Messages, as the exchange needs to know it."""

    name = "messages"
    translation = MessagesTranslation()

    def validate(self, body: Any) -> tuple[str, bool]:
        """A model, `max_tokens` (Anthropic requires it), a valid messages list."""
        model = check_messages(body)
        limit = body.get("max_tokens")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise bad_request("'max_tokens' is required and must be a positive integer.", param="max_tokens")
        return model, stream_flag(body)

    def upstream_body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """As the client sent it (an Anthropic stream reports its usage itself)."""
        return body

    def archived_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """As the client sent it."""
        return body

    def prompt_chars(self, body: dict[str, Any]) -> int:
        """Characters of the system prompt and messages."""
        return json_text_size(body.get("system")) + json_text_size(body.get("messages"))

    def count_prompt(self, counter: TokenCounter, body: dict[str, Any], model: str) -> int:
        """tiktoken's count of the messages as chat sees them (Claude's own tokenizer differs)."""
        return counter.count_messages(messages_chat.chat_messages(body), model)

    def completion_limit(self, body: dict[str, Any]) -> int | None:
        """`max_tokens`."""
        limit = body.get("max_tokens")
        return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


MESSAGES = MessagesApi()


def _usage(outcome: Outcome) -> dict[str, Any]:
    usage = outcome.usage
    return messages_chat.usage_object(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                                      usage.cache_write_tokens)


def _base(exchange: Exchange) -> str:
    return exchange.request_id.removeprefix("req_")


def _anthropic_error(status: int, raw: bytes, request_id: str) -> bytes:
    """An upstream error body (OpenAI-shaped, or Anthropic's own) in Anthropic's shape."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("type") == "error":
        return raw  # already Anthropic's
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return anthropic_error_bytes(status, str(message or f"The upstream answered {status}."), request_id)


class MessagesRenderer(OpenAIHttpRenderer):
    """Anthropic's JSON and SSE, passed through from native upstreams, rendered from chat for the others."""

    __slots__ = ("_events", "_ended")

    def __init__(self, request: web.Request) -> None:
        super().__init__(request, True)
        self._events: messages_chat.ChatStreamToMessages | None = None
        self._ended = False

    async def start_stream(self, exchange: Exchange) -> None:
        """The SSE head; translated, `message_start` right away."""
        await super().start_stream(exchange)
        if exchange.translated:
            self._events = messages_chat.ChatStreamToMessages(_base(exchange), exchange.model)
            await self._write(self._events.start())

    async def pieces(self, exchange: Exchange, pieces: list[Piece], final: bool) -> None:
        """Native events as they came; chat chunks as the Anthropic events they amount to."""
        events = self._events
        if events is None:
            await self._write(pieces[0].raw if len(pieces) == 1 else b"".join(p.raw for p in pieces))
            return
        parts = [event for piece in pieces if piece.obj is not None for event in events.chunk(piece.obj)]
        if final:
            parts.append(events.finish(_usage(await exchange.outcome())))
            self._ended = True
        if parts:
            await self._write(b"".join(parts))

    async def finished(self, exchange: Exchange, outcome: Outcome) -> None:
        """End the stream (a translated one that lacked `[DONE]` still gets `message_stop`)."""
        if self._events is not None and not self._ended:
            self._ended = True
            await self._write(self._events.finish(_usage(outcome)))
        await super().finished(exchange, outcome)

    async def whole(self, exchange: Exchange, reply: WholeReply, outcome: Outcome) -> None:
        """The message (translated from chat when it came from a chat upstream), or the error in Anthropic's shape."""
        headers = exchange.ids()
        headers["X-Request-Cost"] = cost_header(outcome)
        body = reply.body
        if reply.status >= 400:
            body = _anthropic_error(reply.status, body, exchange.request_id)
        elif exchange.translated and reply.obj is not None:
            body = orjson.dumps(messages_chat.message_object(_base(exchange), exchange.model, reply.obj,
                                                             _usage(outcome)))
        self.response = web.Response(status=reply.status, body=body, content_type="application/json",
                                     headers=headers)

    async def failed(self, exchange: Exchange, error: ProxyError, outcome: Outcome) -> None:
        """Before the stream: an error response. Mid-stream: an `error` event, then the end."""
        if self._stream is None:
            self.response = anthropic_error_response(error, exchange.ids())
            return
        data = messages_chat.ChatStreamToMessages.fail_event(error.status, error.message)
        try:
            await self._stream.write(data)
            await self._stream.write_eof()
        except ConnectionResetError:
            pass  # the client left; the exchange is recorded either way


async def messages(request: web.Request) -> web.StreamResponse:
    """Forward one Messages request through the exchange."""
    return await forward(request, MESSAGES, lambda req, _exchange: MessagesRenderer(req), PASSED_HEADERS)


async def count_tokens(request: web.Request) -> web.Response:
    """`{"input_tokens": n}` for a Messages request, counted here (no upstream call, no usage row)."""
    started = time.perf_counter()
    state = request.app[STATE]
    body = await read_json(request, state.settings)
    model = check_messages(body)
    key = request[CLIENT_KEY]
    routes = resolve(state.config.snapshot, key, model, "messages", via_chat=True)  # scope and existence
    counter = state.tokens
    upstream = routes[0].upstream_name
    count = counter.count_messages(messages_chat.chat_messages(body), upstream)
    if body.get("tools"):
        count += counter.count_text(orjson.dumps(body["tools"]).decode(), upstream)
    request_id = new_request_id()
    access_log.info("%s http %s %s key=%s model=%s status=200 latency_ms=%.1f", request_id, request.method,
                    request.path, key.hint, model, (time.perf_counter() - started) * 1000.0)
    return web.Response(body=orjson.dumps({"input_tokens": count}), content_type="application/json",
                        headers={"X-Request-Id": request_id})
