"""The `anthropic` provider kind: Anthropic's Messages API (`x-api-key`, `anthropic-version`, /v1/messages).

A Messages request passes through untouched (but for `model`), with the client's own
`anthropic-version` and `anthropic-beta`. A chat completion request (and so Responses and
the WebSocket chat, which arrive as chat) is translated: system prompt, multi-turn text,
images, tools and tool_choice ⇄ tool_use/tool_result, stop sequences, `max_tokens`
(required by Anthropic: DEFAULT_MAX_TOKENS when the client sets none), temperature, top_p,
top_k; the reply and stream events come back as chat completions and chunks, stop reasons
as finish reasons, usage with cache reads and writes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from proxy_app.backs.base import UpstreamCall, UpstreamFault
from proxy_app.backs.chat_reading import as_dict as _dict
from proxy_app.backs.chat_reading import message_text as _text
from proxy_app.backs.chat_reading import positive_int as _int
from proxy_app.backs.chat_reading import user_parts
from proxy_app.backs.sse import SseSplitter, parse_event
from proxy_app.config import ProviderCfg
from proxy_app.errors import upstream_error_body
from proxy_app.hub import Piece, TokenUsage

API_VERSION = "2023-06-01"  # sent when the client named none (a chat client)
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; a chat request may leave it out
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "pause_turn": "stop", "refusal": "content_filter"}
_DONE = b"data: [DONE]\n\n"


def messages_url(base_url: str) -> str:
    """The Messages endpoint of a provider URL given as Anthropic documents it, with or without /v1."""
    base = base_url.rstrip("/")
    return (base if base.endswith("/v1") else base + "/v1") + "/messages"


# --- chat -> messages ------------------------------------------------------------------------


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value} if kind == "text" else _image(value) for kind, value in user_parts(content)]


def _arguments(value: Any) -> Any:
    try:
        parsed = orjson.loads(value) if isinstance(value, str) and value else {}
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def messages_body(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat completion request as an Anthropic Messages request."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:  # Anthropic wants roles to alternate: merge neighbours
            turns[-1]["content"].extend(blocks)
        elif blocks:
            turns.append({"role": role, "content": blocks})

    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system.append(_text(content))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = _text(content)
            if text:
                blocks.append({"type": "text", "text": text})
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    blocks.append({"type": "tool_use", "id": str(call.get("id") or ""),
                                   "name": str(function.get("name") or ""),
                                   "input": _arguments(function.get("arguments"))})
            add("assistant", blocks)
        elif role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": str(message.get("tool_call_id") or ""),
                          "content": _text(content)}])
        else:
            add("user", _user_blocks(content))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    out: dict[str, Any] = {"model": model, "messages": turns,
                           "max_tokens": limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_TOKENS}
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    tools = [t.get("function") for t in body.get("tools") or () if isinstance(t, dict)]
    if tools:
        out["tools"] = [{"name": f.get("name"), "description": f.get("description") or "",
                         "input_schema": f.get("parameters") or {"type": "object", "properties": {}}}
                        for f in tools if isinstance(f, dict)]
        choice = body.get("tool_choice")
        anthropic_choice: dict[str, Any] = {"type": "auto"}
        if choice == "required":
            anthropic_choice = {"type": "any"}
        elif choice == "none":
            anthropic_choice = {"type": "none"}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            anthropic_choice = {"type": "tool", "name": choice["function"].get("name")}
        if body.get("parallel_tool_calls") is False:
            anthropic_choice["disable_parallel_tool_use"] = True
        out["tool_choice"] = anthropic_choice
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("temperature", "top_p", "top_k"):
        if isinstance(body.get(name), (int, float)) and not isinstance(body.get(name), bool):
            out[name] = body[name]
    if isinstance(out.get("temperature"), (int, float)) and out["temperature"] > 1:
        out["temperature"] = 1  # OpenAI's range is 0-2, Anthropic's 0-1
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


# --- messages -> chat --------------------------------------------------------------------------


def _usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's usage in chat's shape (prompt_tokens counts cache reads and writes, as OpenAI's counts reads)."""
    read = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + read + written
    completion = _int(usage.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": read}, "cache_creation_input_tokens": written}


def chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message as a chat completion."""
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text.append(str(block.get("text") or ""))
        elif block.get("type") == "thinking":
            thinking.append(str(block.get("thinking") or ""))
        elif block.get("type") == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if calls:
        reply["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": message.get("id"), "object": "chat.completion", "created": int(time.time()),
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply,
                     "finish_reason": FINISH_REASONS.get(str(message.get("stop_reason")), "stop")}],
    }
    if isinstance(message.get("usage"), dict):
        out["usage"] = _usage(message["usage"])
    return out


class MessagesStream:
    """Anthropic's events passed through (Messages clients), the closing one marked as the end."""

    __slots__ = ("_splitter", "_start_usage")

    def __init__(self) -> None:
        self._splitter = SseSplitter()
        self._start_usage: dict[str, Any] = {}

    def feed(self, data: bytes) -> list[Piece]:
        """The pieces of one read."""
        return [self._piece(raw) for raw in self._splitter.feed(data)]

    def close(self) -> list[Piece]:
        """An unterminated last event."""
        return [self._piece(raw) for raw in self._splitter.close()]

    def _piece(self, raw: bytes) -> Piece:
        obj = parse_event(raw)
        if not isinstance(obj, dict):
            return Piece(None, raw)
        kind = obj.get("type")
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            usage = obj["message"].get("usage")
            self._start_usage = dict(usage) if isinstance(usage, dict) else {}
        elif kind == "message_delta" and isinstance(obj.get("usage"), dict):
            # The final figures: message_start's input counts, message_delta's output (cumulative).
            obj["usage"] = {**self._start_usage, **{k: v for k, v in obj["usage"].items() if v is not None}}
        return Piece(obj, raw, kind == "message_stop")


class ChatFromMessagesStream:
    """Anthropic's events in, chat completion chunks out (for chat clients of an Anthropic provider)."""

    __slots__ = ("_splitter", "_id", "_model", "_created", "_tools", "_usage")

    def __init__(self) -> None:
        self._splitter = SseSplitter()
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._tools = 0
        self._usage: dict[str, Any] = {}

    def feed(self, data: bytes) -> list[Piece]:
        """The chat chunks of one read."""
        return [p for raw in self._splitter.feed(data) if (p := self._piece(raw)) is not None]

    def close(self) -> list[Piece]:
        """What an unterminated last event makes."""
        return [p for raw in self._splitter.close() if (p := self._piece(raw)) is not None]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Piece:
        obj = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return Piece(obj, b"data: " + orjson.dumps(obj) + b"\n\n")

    def _piece(self, raw: bytes) -> Piece | None:
        obj = parse_event(raw)
        if not isinstance(obj, dict):
            return None
        kind = obj.get("type")
        if kind == "content_block_delta":
            delta = _dict(obj.get("delta"))
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text") or ""})
            if delta.get("type") == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking") or ""})
            if delta.get("type") == "input_json_delta":
                return self._chunk({"tool_calls": [{"index": self._tools - 1,
                                                    "function": {"arguments": delta.get("partial_json") or ""}}]})
            return None
        if kind == "content_block_start":
            block = _dict(obj.get("content_block"))
            if block.get("type") != "tool_use":
                return None
            self._tools += 1
            return self._chunk({"tool_calls": [{"index": self._tools - 1, "id": block.get("id"), "type": "function",
                                                "function": {"name": block.get("name"), "arguments": ""}}]})
        if kind == "message_start":
            message = _dict(obj.get("message"))
            self._id, self._model = str(message.get("id") or ""), str(message.get("model") or "")
            self._usage = dict(message["usage"]) if isinstance(message.get("usage"), dict) else {}
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            delta = _dict(obj.get("delta"))
            if isinstance(obj.get("usage"), dict):
                self._usage.update({k: v for k, v in obj["usage"].items() if v is not None})
            finish = FINISH_REASONS.get(str(delta.get("stop_reason")), "stop")
            piece = self._chunk({}, finish)
            usage = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                     "model": self._model, "choices": [], "usage": _usage(self._usage)}
            # One piece can carry one object: the finish chunk, then the usage chunk, in one write.
            piece.raw += b"data: " + orjson.dumps(usage) + b"\n\n"
            piece.obj = {**piece.obj, "usage": usage["usage"]} if piece.obj else None
            return piece
        if kind == "message_stop":
            return Piece(None, _DONE, True)
        if kind == "error":
            return Piece(obj, raw)  # a fault: the runner ends the exchange with it
        return None  # ping, content_block_stop


class AnthropicAdapter:
    """Anthropic's API."""

    kind = "anthropic"
    native_apis = frozenset({"messages"})
    translated_apis = frozenset({"chat"})

    def build(self, provider: ProviderCfg, api: str, body: dict[str, Any], upstream_model: str,
              stream: bool, client_headers: Mapping[str, str]) -> UpstreamCall:
        """POST {base}/v1/messages with Anthropic's auth; a chat body translated first."""
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if stream else "application/json",
                   "anthropic-version": client_headers.get("anthropic-version") or API_VERSION}
        if client_headers.get("anthropic-beta"):
            headers["anthropic-beta"] = client_headers["anthropic-beta"]
        if provider.server_key:
            headers["x-api-key"] = provider.server_key
        payload = {**body, "model": upstream_model} if api == "messages" else messages_body(body, upstream_model)
        return UpstreamCall("POST", messages_url(provider.base_url), headers, orjson.dumps(payload))

    def decode_reply(self, api: str, raw: bytes, request: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The message (as a chat completion for chat clients)."""
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, dict):
            return None
        return chat_completion(parsed) if api == "chat" else parsed

    def stream_decoder(self, api: str) -> MessagesStream | ChatFromMessagesStream:
        """Anthropic's events, or (for chat clients) chat chunks made of them."""
        return ChatFromMessagesStream() if api == "chat" else MessagesStream()

    def usage(self, obj: dict[str, Any]) -> TokenUsage | None:
        """Usage of a message, a message_start/message_delta event, or a chat chunk made by this adapter."""
        usage = obj.get("usage")
        if not isinstance(usage, dict):
            message = obj.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if not isinstance(usage, dict):
                return None
        if "prompt_tokens" not in usage:
            if not isinstance(usage.get("input_tokens"), int):
                return None
            usage = _usage(usage)
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        read = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return TokenUsage(prompt, completion, prompt + completion, cached=read,
                          cache_write=_int(usage.get("cache_creation_input_tokens")))

    def fault(self, obj: dict[str, Any]) -> UpstreamFault | None:
        """An `error` event (e.g. overloaded_error) in place of the rest of the stream."""
        if obj.get("type") != "error":
            return None
        error = _dict(obj.get("error"))
        return UpstreamFault(502, str(error.get("message") or "The upstream failed mid-stream."),
                             str(error.get("type") or "upstream_error"))

    def error_body(self, status: int, raw: bytes, provider: ProviderCfg) -> bytes:
        """The upstream's error body (Anthropic's shape has the `error` object OpenAI clients read; keys masked)."""
        return upstream_error_body(status, raw, provider.name, provider.server_key)
