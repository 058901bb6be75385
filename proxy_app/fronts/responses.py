"""POST /v1/responses: the Responses API over HTTP, as JSON or typed SSE events.

To a provider serving `responses` natively the request passes through untouched (but
for `model`) and its reply or events come back as its own bytes. To a chat-only
provider it goes as chat completions (`fronts/responses_chat.py`), and the reply is
rendered back into a Response object or the Responses stream events, tool calls
included. Both ways the exchange meters, limits, records and archives it as any other.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy_app.errors import ProxyError, bad_request
from proxy_app.exchange import Exchange, Outcome, WholeReply
from proxy_app.exchange.tokens import TokenCounter, json_text_size
from proxy_app.fronts import responses_chat
from proxy_app.fronts.openai_http import OpenAIHttpRenderer, forward, model_of, stream_flag
from proxy_app.hub import Piece

STATEFUL_FIELDS = tuple(responses_chat.NATIVE_FIELDS)
NAMED_TOOLS = ("function", "custom", "namespace")
ROLES = ("user", "assistant", "system", "developer")


def _check_input(value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise bad_request("'input' must be a string or a list of input items.", param="input")
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad_request(f"'input[{n}]' must be an object.", param=f"input[{n}]")
        if item.get("type") in (None, "message"):
            content = item.get("content")
            if item.get("role") not in ROLES or not isinstance(content, (str, list)):
                raise bad_request(
                    f"'input[{n}]' is a message: it needs a 'role' ({', '.join(ROLES)}) and a 'content' string or "
                    "list.", param=f"input[{n}]")
        elif not isinstance(item.get("type"), str):
            raise bad_request(f"'input[{n}].type' must be a string.", param=f"input[{n}].type")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise bad_request("'tools' must be a list.", param="tools")
    for n, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise bad_request(f"'tools[{n}]' must be an object with a 'type'.", param=f"tools[{n}]")
        if tool["type"] in NAMED_TOOLS and not (isinstance(tool.get("name"), str) and tool["name"]):
            raise bad_request(f"'tools[{n}].name' is required for a {tool['type']} tool.", param=f"tools[{n}].name")


class ResponsesTranslation:
    """The Responses API through chat completions."""

    def native_only(self, body: dict[str, Any]) -> str | None:
        """What needs a native upstream (stored state, built-in tools, file inputs)."""
        return responses_chat.native_only(body)

    def chat_body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """The request as chat completions."""
        return responses_chat.chat_body(body, stream)


class ResponsesApi:
    """OpenAI Responses, as the exchange needs to know it."""

    name = "responses"
    translation = ResponsesTranslation()

    def validate(self, body: Any) -> tuple[str, bool]:
        """A model, `input` (a string or items; absent only when stored state stands for it), tools, limits."""
        model = model_of(body)
        stream = stream_flag(body)
        if body.get("input") is not None:
            _check_input(body["input"])
        elif not any(body.get(field) for field in STATEFUL_FIELDS):
            raise bad_request("'input' is required: a string or a list of input items.", param="input")
        if body.get("instructions") is not None and not isinstance(body["instructions"], str):
            raise bad_request("'instructions' must be a string.", param="instructions")
        _check_tools(body.get("tools"))
        limit = body.get("max_output_tokens")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise bad_request("'max_output_tokens' must be a positive integer.", param="max_output_tokens")
        return model, stream

    def upstream_body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """As the client sent it (a Responses stream reports its usage in `response.completed`)."""
        return body

    def archived_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """As the client sent it."""
        return body

    def prompt_chars(self, body: dict[str, Any]) -> int:
        """Characters of the instructions and input."""
        return json_text_size(body.get("instructions")) + json_text_size(body.get("input"))

    def count_prompt(self, counter: TokenCounter, body: dict[str, Any], model: str) -> int:
        """tiktoken's count of the input as the chat messages it amounts to."""
        return counter.count_messages(responses_chat.chat_messages(body), model)

    def completion_limit(self, body: dict[str, Any]) -> int | None:
        """`max_output_tokens`."""
        limit = body.get("max_output_tokens")
        return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


RESPONSES = ResponsesApi()


def _usage(outcome: Outcome) -> dict[str, Any]:
    usage = outcome.usage
    return responses_chat.usage_object(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
                                       usage.cached_tokens, usage.reasoning_tokens)


def _sequence_number(raw: bytes) -> int:
    """The `sequence_number` of an event as the upstream sent it (-1 when it has none)."""
    at = raw.find(b"data:")
    try:
        obj = orjson.loads(raw[at + 5:]) if at >= 0 else None
    except orjson.JSONDecodeError:
        return -1
    number = obj.get("sequence_number") if isinstance(obj, dict) else None
    return number if isinstance(number, int) else -1


def _base(exchange: Exchange) -> str:
    return exchange.request_id.removeprefix("req_")


def _created_at(exchange: Exchange) -> int:
    return int(exchange.created_at.timestamp())


class ResponsesRenderer(OpenAIHttpRenderer):
    """Native replies and events as they came; translated ones rendered from chat into Responses' shapes."""

    __slots__ = ("_events", "_ended", "_last_raw")

    def __init__(self, request: web.Request) -> None:
        super().__init__(request, True)
        self._events: responses_chat.ChatStreamToResponses | None = None
        self._ended = False
        self._last_raw = b""

    async def start_stream(self, exchange: Exchange) -> None:
        """The SSE head; translated, `response.created` right away (the client sees progress at once)."""
        await super().start_stream(exchange)
        if exchange.translated:
            self._events = responses_chat.ChatStreamToResponses(
                _base(exchange), exchange.client_body, exchange.model, _created_at(exchange))
            await self._write(self._events.start())

    async def pieces(self, exchange: Exchange, pieces: list[Piece], final: bool) -> None:
        """Native events as they came; chat chunks as the Responses events they amount to."""
        events = self._events
        if events is None:
            self._last_raw = pieces[-1].raw  # read only if the stream fails (for its sequence number)
            await self._write(pieces[0].raw if len(pieces) == 1 else b"".join(p.raw for p in pieces))
            return
        parts = [event for piece in pieces if piece.obj is not None for event in events.chunk(piece.obj)]
        if final:
            parts.append(events.finish(_usage(await exchange.outcome())))
            self._ended = True
        if parts:
            await self._write(b"".join(parts))

    async def finished(self, exchange: Exchange, outcome: Outcome) -> None:
        """A translated stream that ended without `[DONE]` still gets its `response.completed`."""
        if self._events is not None and not self._ended:
            self._ended = True
            await self._write(self._events.finish(_usage(outcome)))
        await super().finished(exchange, outcome)

    async def whole(self, exchange: Exchange, reply: WholeReply, outcome: Outcome) -> None:
        """A translated chat completion as a Response object; anything else as it came."""
        if exchange.translated and reply.status < 400 and reply.obj is not None:
            base = _base(exchange)
            output, finish = responses_chat.reply_output(
                base, reply.obj, responses_chat.tool_names(exchange.client_body))
            upstream_model = reply.obj.get("model")
            model = upstream_model if isinstance(upstream_model, str) else exchange.model
            response = responses_chat.response_object(
                base, exchange.client_body, model, _created_at(exchange), responses_chat.status_of(finish),
                output, _usage(outcome), finish)
            reply = WholeReply(reply.status, orjson.dumps(response), response, reply.headers)
        await super().whole(exchange, reply, outcome)

    async def failed(self, exchange: Exchange, error: ProxyError, outcome: Outcome) -> None:
        """Mid-stream, `response.failed` (what Responses clients wait for), then the end."""
        stream = self._stream
        if stream is None:
            await super().failed(exchange, error, outcome)
            return
        code = error.code or error.type
        if self._events is not None:
            data = self._events.fail(code, error.message)
        else:
            response = responses_chat.response_object(
                _base(exchange), exchange.client_body, exchange.model, _created_at(exchange), "failed", [], None,
                error={"code": code, "message": error.message})
            data = responses_chat.event_bytes({"type": "response.failed",
                                               "sequence_number": _sequence_number(self._last_raw) + 1,
                                               "response": response})
        try:
            await stream.write(data)
            await stream.write_eof()
        except ConnectionResetError:
            pass  # the client left; the exchange is recorded either way


async def responses(request: web.Request) -> web.StreamResponse:
    """Forward one Responses request through the exchange."""
    return await forward(request, RESPONSES, lambda req, _exchange: ResponsesRenderer(req))
