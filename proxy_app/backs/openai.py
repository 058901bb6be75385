"""The `openai` provider kind: any OpenAI-compatible API (OpenAI, DeepSeek, OpenRouter, vLLM, Ollama, …).

Its wire format is the hub format, so replies and stream events pass through as
they came; the adapter only addresses the request (base URL + the API's path,
Bearer auth) and reads usage and errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy_app.backs.base import UpstreamCall, UpstreamFault
from proxy_app.backs.sse import DONE, SseSplitter, parse_event
from proxy_app.config import ProviderCfg
from proxy_app.errors import upstream_error_body
from proxy_app.hub import Piece, TokenUsage

PATHS = {
    "chat": "/chat/completions",
    "responses": "/responses",
    "embeddings": "/embeddings",
    "completions": "/completions",
}


# The events that end a Responses stream (it has no `data: [DONE]`); `response.failed` is a fault.
RESPONSES_ENDS = frozenset({"response.completed", "response.incomplete"})
_RESPONSES_END_NAMES = frozenset(name.encode() for name in RESPONSES_ENDS)
# Events that repeat what the deltas already said (or say nothing the exchange meters): passed on
# unparsed. The `.done` events repeat the whole text, so parsing them cost more than the deltas did.
UNMETERED_EVENTS = frozenset({
    b"response.created", b"response.in_progress", b"response.queued", b"response.output_item.done",
    b"response.content_part.added", b"response.content_part.done", b"response.output_text.done",
    b"response.output_text.annotation.added", b"response.function_call_arguments.done",
    b"response.custom_tool_call_input.done", b"response.reasoning_text.done",
    b"response.reasoning_summary_part.added", b"response.reasoning_summary_part.done",
    b"response.reasoning_summary_text.done",
})


class OpenAIStream:
    """SSE events of an OpenAI-compatible stream, each parsed once."""

    __slots__ = ("_splitter",)

    def __init__(self) -> None:
        self._splitter = SseSplitter()

    def feed(self, data: bytes) -> list[Piece]:
        """The pieces of one read."""
        return [_piece(raw) for raw in self._splitter.feed(data)]

    def close(self) -> list[Piece]:
        """An unterminated last event."""
        return [_piece(raw) for raw in self._splitter.close()]


class ResponsesStream(OpenAIStream):
    """The typed events of a Responses stream: the reply ends with `response.completed` (or `.incomplete`)."""

    __slots__ = ()

    def feed(self, data: bytes) -> list[Piece]:
        """The pieces of one read, the closing event marked as the end."""
        return [_responses_piece(raw) for raw in self._splitter.feed(data)]

    def close(self) -> list[Piece]:
        """An unterminated last event."""
        return [_responses_piece(raw) for raw in self._splitter.close()]


def _piece(raw: bytes) -> Piece:
    obj = parse_event(raw)
    if obj is DONE:
        return Piece(None, raw, True)
    return Piece(obj if isinstance(obj, dict) else None, raw)


def _responses_piece(raw: bytes) -> Piece:
    if raw.startswith(b"event: "):  # as OpenAI frames every event: its name first, then its data
        end = raw.find(b"\n", 7)
        name = raw[7:end].rstrip(b"\r ")
        if name in UNMETERED_EVENTS:
            return Piece(None, raw)
        piece = _piece(raw[end + 1:])
        piece.raw = raw
        piece.done = name in _RESPONSES_END_NAMES
        return piece
    piece = _piece(raw)
    if piece.obj is not None and piece.obj.get("type") in RESPONSES_ENDS:
        piece.done = True
    return piece


class OpenAIAdapter:
    """OpenAI-compatible upstreams."""

    kind = "openai"
    native_apis = frozenset(PATHS)
    translated_apis: frozenset[str] = frozenset()

    def build(self, provider: ProviderCfg, api: str, body: dict[str, Any], upstream_model: str,
              stream: bool, client_headers: Mapping[str, str]) -> UpstreamCall:
        """POST {base_url}/{the API's path} with the body as the client sent it, but for `model`."""
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if stream else "application/json"}
        if provider.server_key:
            headers["Authorization"] = f"Bearer {provider.server_key}"
        return UpstreamCall("POST", provider.base_url + PATHS[api], headers,
                            orjson.dumps({**body, "model": upstream_model}))

    def decode_reply(self, api: str, raw: bytes, request: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The reply object (it is already in the hub format); of an embeddings reply, its usage only."""
        if api == "embeddings":
            # The vectors pass through as bytes; parsing thousands of floats to read two counts
            # cost more than the rest of the request (docs/benchmarks.md).
            usage = _trailing_object(raw, b'"usage"')
            return {"usage": usage} if usage is not None else None
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None

    def stream_decoder(self, api: str) -> OpenAIStream:
        """SSE, `data: [DONE]` at the end (Responses: its closing event)."""
        return ResponsesStream() if api == "responses" else OpenAIStream()

    def usage(self, obj: dict[str, Any]) -> TokenUsage | None:
        """`usage` of a reply or chunk (Chat's prompt/completion, or Responses' input/output, with details)."""
        usage = obj.get("usage")
        if not isinstance(usage, dict):
            response = obj.get("response")  # a Responses event carrying the response, e.g. response.completed
            usage = response.get("usage") if isinstance(response, dict) else None
            if not isinstance(usage, dict):
                return None
        if isinstance(usage.get("prompt_tokens"), int):
            prompt = usage["prompt_tokens"]
            completion = _int(usage.get("completion_tokens"))
            cached = _int(_detail(usage, "prompt_tokens_details", "cached_tokens"))
            reasoning = _int(_detail(usage, "completion_tokens_details", "reasoning_tokens"))
        elif isinstance(usage.get("input_tokens"), int):
            prompt = usage["input_tokens"]
            completion = _int(usage.get("output_tokens"))
            cached = _int(_detail(usage, "input_tokens_details", "cached_tokens"))
            reasoning = _int(_detail(usage, "output_tokens_details", "reasoning_tokens"))
        else:
            return None
        total = _int(usage.get("total_tokens")) or prompt + completion
        return TokenUsage(prompt, completion, total, min(cached, prompt), reasoning)

    def fault(self, obj: dict[str, Any]) -> UpstreamFault | None:
        """An `{"error": {...}}` object where a reply or chunk should be, or a Responses error event."""
        error = obj.get("error")
        if not isinstance(error, dict):
            kind = obj.get("type")
            if kind == "error":  # Responses' `error` event carries code and message itself
                error = obj
            elif kind == "response.failed":
                response = obj.get("response")
                error = response.get("error") if isinstance(response, dict) else None
                if not isinstance(error, dict):
                    error = {"message": "The upstream reported the response failed."}
            else:
                return None
        message = error.get("message")
        code = error.get("code") or (error.get("type") if error is not obj else None) or "upstream_error"
        return UpstreamFault(502, str(message or "The upstream failed mid-stream."), str(code))

    def error_body(self, status: int, raw: bytes, provider: ProviderCfg) -> bytes:
        """The upstream's own error body when it is OpenAI-shaped (key copies masked)."""
        return upstream_error_body(status, raw, provider.name, provider.server_key)


def _trailing_object(raw: bytes, name: bytes, tries: int = 8) -> dict[str, Any] | None:
    """The JSON object value of the last `name` member in `raw`, parsed alone."""
    at = raw.rfind(name)
    start = raw.find(b"{", at + len(name)) if at >= 0 else -1
    if start < 0 or raw[at + len(name):start].strip() != b":":
        return None
    end = start
    for _ in range(tries):  # the first "}" closes it unless it holds objects of its own
        end = raw.find(b"}", end + 1)
        if end < 0:
            return None
        try:
            value = orjson.loads(raw[start:end + 1])
        except orjson.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else None
    return None


def _detail(usage: dict[str, Any], group: str, name: str) -> Any:
    details = usage.get(group)
    return details.get(name) if isinstance(details, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
