"""Anthropic's Messages API through chat completions: requests to chat, chat replies and streams back.

For providers that do not serve `messages` natively (any OpenAI-compatible server) a
Messages request is sent as a chat completion, and the reply or stream is rendered back as
an Anthropic message or its events (`message_start`, `content_block_start`/`_delta`/`_stop`,
`message_delta`, `message_stop`, `ping`), so Claude Code and the `anthropic` SDK work in
front of any model.

Carried: `system` (a string or text blocks), multi-turn text, images (base64 and URL),
`tool_use`/`tool_result` ⇄ `tool_calls`/`tool` messages, tools and `tool_choice`
(`disable_parallel_tool_use` included), `stop_sequences`, `max_tokens`, temperature and
top_p, `metadata.user_id`; the upstream's reasoning text comes back as a `thinking` block.
Dropped, having no chat equivalent: `cache_control` marks, `top_k`, `thinking`,
`output_config` and `context_management` settings, and thinking blocks sent back. What
cannot be carried (documents, server tools, MCP servers, containers) is named by
`native_only`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from proxy_app.errors import anthropic_error_type, bad_request

TEXT_BLOCKS = ("text",)
SKIPPED_BLOCKS = ("thinking", "redacted_thinking")
NATIVE_FIELDS = {"mcp_servers": "'mcp_servers'", "container": "'container'"}
_TEXT_ONLY = frozenset({"content", "role"})  # a chunk's delta that carries text and nothing else
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}


def native_only(body: dict[str, Any]) -> str | None:
    """What in a Messages request the chat translation cannot carry, if anything."""
    for field, what in NATIVE_FIELDS.items():
        if body.get(field):
            return what
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("type") not in (None, "custom"):
            return f"The server tool '{tool.get('type')}'"
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in (*TEXT_BLOCKS, *SKIPPED_BLOCKS, "image", "tool_use", "tool_result"):
                return f"A content block of type '{kind}'"
            if kind == "image" and _image_url(block) is None:
                return "An image given by file id"
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _image_url(block: dict[str, Any]) -> str | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    return None


def _text(value: Any, joiner: str = "\n") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return joiner.join(str(b.get("text") or "") for b in value if isinstance(b, dict) and b.get("type") == "text")
    return ""


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The system prompt and messages as chat messages (what cannot be translated is left out)."""
    out: list[dict[str, Any]] = []
    system = _text(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if message.get("role") == "assistant":
            out.append(_assistant(content))
        elif message.get("role") == "system":
            out.append({"role": "system", "content": _text(content)})
        else:
            out.extend(_user(content))
    return out


def _assistant(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            calls.append({"id": str(block.get("id") or ""), "type": "function", "function": {
                "name": str(block.get("name") or ""), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _user(content: Any) -> list[dict[str, Any]]:
    """One user turn: its tool results first (as chat wants them right after the calls), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "tool_result":
            text = _text(block.get("content"))
            if block.get("is_error"):
                text = "Error: " + text
            results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text") or "")})
        elif kind == "image":
            url = _image_url(block)
            if url is not None:
                parts.append({"type": "image_url", "image_url": {"url": url}})
    if not parts:
        return results
    if all(p["type"] == "text" for p in parts):
        # Many chat servers take only a string; text blocks are joined, as they would be read.
        return [*results, {"role": "user", "content": "\n".join(p["text"] for p in parts)}]
    return [*results, {"role": "user", "content": parts}]


def chat_body(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """A Messages request as a chat completion request."""
    out: dict[str, Any] = {"model": body["model"], "messages": chat_messages(body), "max_tokens": body["max_tokens"]}
    tools = [{"type": "function", "function": {
        "name": t.get("name"), "description": t.get("description") or "",
        "parameters": t.get("input_schema") or {"type": "object", "properties": {}}}}
        for t in body.get("tools") or () if isinstance(t, dict)]
    choice = _dict(body.get("tool_choice"))
    if tools and choice.get("type") != "none":
        out["tools"] = tools
        if choice.get("type") == "any":
            out["tool_choice"] = "required"
        elif choice.get("type") == "tool" and choice.get("name"):
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        if choice.get("disable_parallel_tool_use") is True:
            out["parallel_tool_calls"] = False
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if not out["messages"]:
        raise bad_request("The request has no messages to send.", param="messages")
    return out


# --- replies -----------------------------------------------------------------------


def usage_object(prompt: int, completion: int, cached: int, cache_write: int = 0) -> dict[str, Any]:
    """Token figures in Anthropic's shape: `input_tokens` excludes what was read from or written to cache."""
    return {"input_tokens": max(0, prompt - cached - cache_write), "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cached, "output_tokens": completion}


def stop_reason(finish_reason: str | None) -> str:
    """Anthropic's stop reason for a chat finish reason."""
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def _input(arguments: str) -> Any:
    try:
        parsed = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {}  # a model that wrote broken JSON: Anthropic's clients expect an object
    return parsed if isinstance(parsed, dict) else {}


def message_object(base: str, model: str, completion: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion (its first choice) as an Anthropic message."""
    choices = completion.get("choices")
    choice = _dict(choices[0]) if isinstance(choices, list) and choices else {}
    message = _dict(choice.get("message"))
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append({"type": "tool_use", "id": str(call.get("id") or f"toolu_{base}_{len(content)}"),
                            "name": str(function.get("name") or ""),
                            "input": _input(str(function.get("arguments") or ""))})
    finish = choice.get("finish_reason")
    return {"id": "msg_" + base, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason(finish if isinstance(finish, str) else None), "stop_sequence": None,
            "usage": usage}


def event_bytes(event: dict[str, Any]) -> bytes:
    """One SSE event as Anthropic frames them: its type as the event name."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _Block:
    __slots__ = ("index", "kind", "call_id", "name", "head")

    def __init__(self, index: int, kind: str, call_id: str = "", name: str = "") -> None:
        self.index, self.kind, self.call_id, self.name = index, kind, call_id, name
        self.head = b""  # the bytes every delta event of this block starts with


class ChatStreamToMessages:
    """Chat completion chunks in, Anthropic stream events out (one instance per stream)."""

    def __init__(self, base: str, model: str) -> None:
        self.base, self.model = base, model
        self.blocks = 0
        self.open: _Block | None = None  # Anthropic streams one content block at a time
        self.calls: dict[int, _Block] = {}
        self.finish_reason: str | None = None

    def start(self) -> bytes:
        """`message_start` (usage comes with `message_delta`: a chat upstream reports it last), then a ping."""
        message: dict[str, Any] = {
            "id": "msg_" + self.base, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage_object(0, 0, 0)}
        return event_bytes({"type": "message_start", "message": message}) + event_bytes({"type": "ping"})

    def chunk(self, obj: dict[str, Any]) -> Iterator[bytes]:
        """The events one chat chunk makes."""
        choices = obj.get("choices")
        if type(choices) is list and len(choices) == 1:
            # The hot path: one more piece of text for the text block already open.
            choice = choices[0]
            delta = choice.get("delta") if type(choice) is dict else None
            block = self.open
            if (type(delta) is dict and block is not None and block.kind == "text" and choice.get("index", 0) == 0
                    and not choice.get("finish_reason") and delta.keys() <= _TEXT_ONLY):
                content = delta.get("content")
                if type(content) is str and content:
                    yield block.head + orjson.dumps(content) + b"}}\n\n"
                    return
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    yield from self._delta("thinking", reasoning)
                content = delta.get("content")
                if isinstance(content, str) and content:
                    yield from self._delta("text", content)
                for fragment in delta.get("tool_calls") or ():
                    if isinstance(fragment, dict):
                        yield from self._call_fragment(fragment)
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]

    def _begin(self, kind: str, block: dict[str, Any], call_id: str = "", name: str = "") -> Iterator[bytes]:
        yield from self._close()
        self.open = _Block(self.blocks, kind, call_id, name)
        self.blocks += 1
        yield event_bytes({"type": "content_block_start", "index": self.open.index, "content_block": block})

    def _delta(self, kind: str, text: str) -> Iterator[bytes]:
        block = self.open
        if block is None or block.kind != kind:
            start = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "",
                                                                         "signature": ""}
            yield from self._begin(kind, start)
            block = self.open
            assert block is not None
            # The hot path (one event per upstream chunk): the constant part is built once per block.
            block.head = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                          + str(block.index).encode() + b',"delta":{"type":"' + kind.encode() + b'_delta","'
                          + kind.encode() + b'":')
        yield block.head + orjson.dumps(text) + b"}}\n\n"

    def _call_fragment(self, fragment: dict[str, Any]) -> Iterator[bytes]:
        given = fragment.get("index")
        index = given if isinstance(given, int) else len(self.calls)
        function = _dict(fragment.get("function"))
        call = self.calls.get(index)
        if call is None:
            call_id = str(fragment.get("id") or f"toolu_{self.base}_{index}")
            name = str(function.get("name") or "")
            yield from self._begin("tool_use", {"type": "tool_use", "id": call_id, "name": name, "input": {}},
                                   call_id, name)
            assert self.open is not None
            self.calls[index] = call = self.open
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and call is self.open:
            yield event_bytes({"type": "content_block_delta", "index": call.index,
                               "delta": {"type": "input_json_delta", "partial_json": arguments}})

    def _close(self) -> Iterator[bytes]:
        block, self.open = self.open, None
        if block is not None:
            yield event_bytes({"type": "content_block_stop", "index": block.index})

    def finish(self, usage: dict[str, Any]) -> bytes:
        """Close the open block, then `message_delta` (stop reason, usage) and `message_stop`."""
        parts = list(self._close())
        parts.append(event_bytes({"type": "message_delta", "usage": usage, "delta": {
            "stop_reason": stop_reason(self.finish_reason), "stop_sequence": None}}))
        parts.append(event_bytes({"type": "message_stop"}))
        return b"".join(parts)

    @staticmethod
    def fail_event(status: int, message: str) -> bytes:
        """An `error` event, as Anthropic ends a stream that failed."""
        return event_bytes({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
