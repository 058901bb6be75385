"""The Responses API through chat completions: requests to chat, chat replies and streams back.

For providers whose `apis` lack `responses` (DeepSeek, vLLM, Ollama, …) a Responses
request is sent as a chat completion, and the reply (or stream) is rendered back as a
Responses object (or its typed events: `response.created` … `response.completed`).

What the translation carries: `instructions`, `input` as a string or items (messages
with text and image parts, function calls and their outputs, custom tool calls),
function and custom tools (and namespaces of them), `tool_choice`, `parallel_tool_calls`, `max_output_tokens`,
temperature/top_p, `text.format` (JSON object and schema), `reasoning.effort`, and
usage with cached and reasoning tokens. What it cannot carry (stored state such as
`previous_response_id`, built-in tools, file inputs) is named by `native_only`, and the
exchange answers it with a 400 unless a native provider of the model is a candidate.
Reasoning items a client sends back are dropped: a chat upstream has no use for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from proxy_app.errors import bad_request

# Request fields that only a native upstream can honour (they refer to state it keeps).
NATIVE_FIELDS = {
    "previous_response_id": "'previous_response_id'",
    "conversation": "'conversation'",
    "prompt": "A stored 'prompt'",
}
TRANSLATED_TOOLS = ("function", "custom")
NAMESPACE_JOIN = "__"  # chat function names allow [a-zA-Z0-9_-]: `namespace__tool`
MESSAGE_ITEMS = ("message", None)
CALL_ITEMS = ("function_call", "custom_tool_call")
OUTPUT_ITEMS = ("function_call_output", "custom_tool_call_output")
SKIPPED_ITEMS = ("reasoning",)
TEXT_PARTS = ("input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text")
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def native_only(body: dict[str, Any]) -> str | None:
    """What in a Responses request the chat translation cannot carry, if anything."""
    for field, what in NATIVE_FIELDS.items():
        if body.get(field) not in (None, ""):
            return what
    if body.get("background"):
        return "'background'"
    for tool in body.get("tools") or ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace":
            inner = tool.get("tools") if isinstance(tool.get("tools"), list) else [None]
            if any(not isinstance(t, dict) or t.get("type") not in TRANSLATED_TOOLS for t in inner):
                return f"A namespace of tools holding other than function and custom tools ('{tool.get('name')}')"
        elif kind not in TRANSLATED_TOOLS:
            return f"The built-in tool '{kind}'"
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in TRANSLATED_TOOLS:
        return f"A 'tool_choice' of type '{choice.get('type')}'"
    items = body.get("input")
    if isinstance(items, list):
        for item in items:
            reason = _native_only_item(item)
            if reason is not None:
                return reason
    return None


def _native_only_item(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if kind not in MESSAGE_ITEMS + CALL_ITEMS + OUTPUT_ITEMS + SKIPPED_ITEMS:
        return f"An input item of type '{kind}'"
    parts = item.get("content") if kind in MESSAGE_ITEMS else item.get("output")
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("type") in TEXT_PARTS:
            continue
        if part.get("type") == "input_image" and isinstance(part.get("image_url"), str) and kind in MESSAGE_ITEMS:
            continue
        if part.get("type") == "input_image":
            return "An 'input_image' given by file id (or in a tool output)"
        return f"A content part of type '{part.get('type')}'"
    return None


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The instructions and input as chat messages (what cannot be translated is left out)."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in MESSAGE_ITEMS:
            message = _message(item)
            if message is not None:
                messages.append(message)
        elif kind in CALL_ITEMS:
            call = _tool_call(item)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # calls of one turn share its message
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in OUTPUT_ITEMS:
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""),
                             "content": _text(item.get("output"))})
    return messages


def _message(item: dict[str, Any]) -> dict[str, Any] | None:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        return None
    # Chat-only servers know `system`; few know OpenAI's newer `developer`.
    role = "system" if role == "developer" else role
    content = item.get("content")
    if isinstance(content, str) or role != "user":
        return {"role": role, "content": _text(content, "" if role == "assistant" else "\n")}
    parts = [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []
    if all(p.get("type") in TEXT_PARTS for p in parts):
        # Many chat servers take only a string; text parts are joined, as they would be read.
        return {"role": role, "content": _text(parts, "\n")}
    chat_parts: list[dict[str, Any]] = []
    for part in parts:
        if part.get("type") in TEXT_PARTS:
            chat_parts.append({"type": "text", "text": str(part.get("text") or "")})
        elif part.get("type") == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            chat_parts.append({"type": "image_url", "image_url": image})
    return {"role": role, "content": chat_parts}


def _text(value: Any, joiner: str = "") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return joiner.join(str(p.get("text") or "") for p in value
                           if isinstance(p, dict) and p.get("type") in TEXT_PARTS)
    return "" if value is None else orjson.dumps(value).decode()


def _tool_call(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("type") == "custom_tool_call":
        arguments = orjson.dumps({"input": str(item.get("input") or "")}).decode()
    else:
        given = item.get("arguments")
        arguments = given if isinstance(given, str) else "{}"
    name = str(item.get("name") or "")
    if isinstance(item.get("namespace"), str) and item["namespace"]:
        name = chat_tool_name(item["namespace"], name)
    return {"id": str(item.get("call_id") or item.get("id") or ""), "type": "function",
            "function": {"name": name, "arguments": arguments}}


def chat_tool_name(namespace: str, name: str) -> str:
    """The chat function name of a tool inside a namespace (chat has no namespaces)."""
    return f"{namespace}{NAMESPACE_JOIN}{name}"


def _flat_tools(tools: Any) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(chat name, tool, namespace) of every function and custom tool, namespaces opened."""
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            continue
        if tool.get("type") in TRANSLATED_TOOLS:
            yield tool["name"], tool, None
        elif tool.get("type") == "namespace" and isinstance(tool.get("tools"), list):
            for inner in tool["tools"]:
                if isinstance(inner, dict) and inner.get("type") in TRANSLATED_TOOLS and isinstance(
                        inner.get("name"), str):
                    yield chat_tool_name(tool["name"], inner["name"]), inner, tool["name"]


class ToolName:
    """What a chat function name stands for in the Responses request."""

    __slots__ = ("name", "namespace", "custom")

    def __init__(self, name: str, namespace: str | None, custom: bool) -> None:
        self.name, self.namespace, self.custom = name, namespace, custom


def tool_names(body: dict[str, Any]) -> dict[str, ToolName]:
    """The request's tools by the names the chat upstream calls them (for turning calls back)."""
    return {flat: ToolName(tool["name"], namespace, tool.get("type") == "custom")
            for flat, tool, namespace in _flat_tools(body.get("tools"))}


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    """Function tools as chat's; a custom (free-form) tool as a function taking its text as `input`."""
    out: list[dict[str, Any]] = []
    for flat, tool, _namespace in _flat_tools(tools):
        function: dict[str, Any] = {"name": flat}
        if tool.get("type") == "function":
            if tool.get("description"):
                function["description"] = tool["description"]
            function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
            if tool.get("strict") is not None:
                function["strict"] = tool["strict"]
        else:
            function["description"] = _custom_description(tool)
            function["parameters"] = {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The tool's input, as free text."}},
                "required": ["input"],
            }
        out.append({"type": "function", "function": function})
    return out


def _custom_description(tool: dict[str, Any]) -> str:
    description = str(tool.get("description") or "")
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and fmt.get("definition"):
        description += (f"\n\nThe input must follow this {fmt.get('syntax') or 'grammar'} grammar:\n"
                        f"{fmt['definition']}")
    return description


def chat_body(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """A Responses request as a chat completion request."""
    messages = chat_messages(body)
    if not messages:
        raise bad_request("The request has no input to send.", param="input")
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    tools = chat_tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, str):
            out["tool_choice"] = choice
        elif isinstance(choice, dict) and choice.get("name"):
            name = str(choice["name"])
            if isinstance(choice.get("namespace"), str) and choice["namespace"]:
                name = chat_tool_name(choice["namespace"], name)
            out["tool_choice"] = {"type": "function", "function": {"name": name}}
        if isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    if isinstance(body.get("max_output_tokens"), int):
        out["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if isinstance(body.get("top_logprobs"), int):
        out["logprobs"], out["top_logprobs"] = True, body["top_logprobs"]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str):
        out["user"] = user
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        out["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    return None


# --- replies -----------------------------------------------------------------------


def usage_object(prompt: int, completion: int, total: int, cached: int, reasoning: int) -> dict[str, Any]:
    """Token figures in the Responses API's shape."""
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    }


def response_object(base: str, request: dict[str, Any], model: str, created_at: int, status: str,
                    output: list[dict[str, Any]], usage: dict[str, Any] | None,
                    finish_reason: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Response as the API returns it, echoing the request's settings."""
    incomplete = INCOMPLETE.get(finish_reason or "") if status == "incomplete" else None
    return {
        "id": "resp_" + base,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "store": False,  # a translated response is kept nowhere upstream
        "temperature": request.get("temperature"),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": usage,
        "metadata": request.get("metadata") or {},
    }


def status_of(finish_reason: str | None) -> str:
    """A Response's status for a chat finish reason."""
    return "incomplete" if finish_reason in INCOMPLETE else "completed"


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant message output item."""
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    """A reasoning output item holding the upstream's reasoning text."""
    return {"type": "reasoning", "id": item_id, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def call_item(item_id: str, call_id: str, chat_name: str, arguments: str, tools: dict[str, ToolName],
              status: str = "completed") -> dict[str, Any]:
    """A function (or custom tool) call output item, for a call of `chat_name` by the chat upstream."""
    tool = tools.get(chat_name) or ToolName(chat_name, None, False)
    name = tool.name
    if tool.custom:
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        text = parsed["input"] if isinstance(parsed, dict) and isinstance(parsed.get("input"), str) else arguments
        item = {"type": "custom_tool_call", "id": item_id, "status": status, "call_id": call_id,
                "name": name, "input": text}
    else:
        item = {"type": "function_call", "id": item_id, "status": status, "call_id": call_id,
                "name": name, "arguments": arguments}
    if tool.namespace is not None:
        item["namespace"] = tool.namespace
    return item


def reply_output(base: str, completion: dict[str, Any],
                 tools: dict[str, ToolName]) -> tuple[list[dict[str, Any]], str | None]:
    """The output items of a whole chat completion (its first choice), and its finish reason."""
    choices = completion.get("choices")
    choice = _dict(choices[0]) if isinstance(choices, list) and choices else {}
    message = _dict(choice.get("message"))
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item("rs_" + base, reasoning))
    content = message.get("content")
    if isinstance(content, str) and content:
        output.append(message_item("msg_" + base, content))
    for n, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        output.append(call_item(f"fc_{base}_{n}", str(call.get("id") or f"call_{base}_{n}"),
                                str(function.get("name") or ""), str(function.get("arguments") or ""), tools))
    finish = choice.get("finish_reason")
    return output, finish if isinstance(finish, str) else None


def event_bytes(event: dict[str, Any]) -> bytes:
    """One typed SSE event, as the Responses API frames it."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _OpenItem:
    __slots__ = ("index", "id", "kind", "parts", "call_id", "name", "delta_head")

    def __init__(self, index: int, item_id: str, kind: str, call_id: str = "", name: str = "") -> None:
        self.index, self.id, self.kind = index, item_id, kind
        self.parts: list[str] = []
        self.call_id, self.name = call_id, name
        self.delta_head = b""  # the bytes every delta event of this item starts with


def _delta_head(kind: str, item: _OpenItem, content_index: bool) -> bytes:
    """The constant start of an item's delta events, up to its sequence number (one per delta, built once)."""
    fields = {"type": kind, "item_id": item.id, "output_index": item.index}
    if content_index:
        fields["content_index"] = 0
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(fields)[:-1] + b',"sequence_number":'


class ChatStreamToResponses:
    """Chat completion chunks in, Responses stream events out (one instance per stream)."""

    def __init__(self, base: str, request: dict[str, Any], model: str, created_at: int) -> None:
        self.base, self.request, self.model, self.created_at = base, request, model, created_at
        self.tools = tool_names(request)
        self.sequence = 0
        self.output: list[dict[str, Any] | None] = []
        self.text: _OpenItem | None = None
        self.reasoning: _OpenItem | None = None
        self.calls: dict[int, _OpenItem] = {}
        self.finish_reason: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event_bytes(event)

    def _response(self, status: str, usage: dict[str, Any] | None = None,
                  error: dict[str, Any] | None = None) -> dict[str, Any]:
        output = [item for item in self.output if item is not None]
        return response_object(self.base, self.request, self.model, self.created_at, status, output, usage,
                               self.finish_reason, error)

    def start(self) -> bytes:
        """`response.created` and `response.in_progress`."""
        response = self._response("in_progress")
        return self._event("response.created", response=response) + self._event("response.in_progress",
                                                                                  response=response)

    def chunk(self, obj: dict[str, Any]) -> Iterator[bytes]:
        """The events one chat chunk makes."""
        if isinstance(obj.get("model"), str) and obj["model"]:
            self.model = obj["model"]
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # a Response has one answer: the first choice's
            delta = choice.get("delta")
            if isinstance(delta, dict):
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    yield from self._reasoning_delta(reasoning)
                content = delta.get("content")
                if isinstance(content, str) and content:
                    yield from self._text_delta(content)
                calls = delta.get("tool_calls")
                if isinstance(calls, list):
                    for fragment in calls:
                        if isinstance(fragment, dict):
                            yield from self._call_fragment(fragment)
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]

    def _open(self, kind: str, item_id: str, call_id: str = "", name: str = "") -> _OpenItem:
        opened = _OpenItem(len(self.output), item_id, kind, call_id, name)
        self.output.append(None)
        return opened

    def _reasoning_delta(self, text: str) -> Iterator[bytes]:
        if self.reasoning is None:
            yield from self._close_text()
            item_id = f"rs_{self.base}_{len(self.output)}"
            self.reasoning = opened = self._open("reasoning", item_id)
            yield self._event("response.output_item.added", output_index=opened.index,
                              item={"type": "reasoning", "id": item_id, "summary": [], "content": []})
            opened.delta_head = _delta_head("response.reasoning_text.delta", opened, True)
        self.reasoning.parts.append(text)
        yield self._delta(self.reasoning, text)

    def _text_delta(self, text: str) -> Iterator[bytes]:
        if self.text is None:
            yield from self._close_reasoning()
            item_id = f"msg_{self.base}_{len(self.output)}"
            self.text = opened = self._open("message", item_id)
            yield self._event("response.output_item.added", output_index=opened.index,
                              item={"type": "message", "id": item_id, "status": "in_progress",
                                    "role": "assistant", "content": []})
            yield self._event("response.content_part.added", item_id=item_id, output_index=opened.index,
                              content_index=0, part={"type": "output_text", "text": "", "annotations": []})
            opened.delta_head = _delta_head("response.output_text.delta", opened, True)
        self.text.parts.append(text)
        yield self._delta(self.text, text, b',"logprobs":[]}\n\n')

    def _delta(self, item: _OpenItem, text: str, tail: bytes = b"}\n\n") -> bytes:
        # The hot path (one event per upstream chunk): the constant part of the event is built once per item.
        sequence, self.sequence = self.sequence, self.sequence + 1
        return item.delta_head + str(sequence).encode() + b',"delta":' + orjson.dumps(text) + tail

    def _call_fragment(self, fragment: dict[str, Any]) -> Iterator[bytes]:
        given = fragment.get("index")
        index = given if isinstance(given, int) else len(self.calls)
        function = _dict(fragment.get("function"))
        call = self.calls.get(index)
        if call is None:
            yield from self._close_reasoning()
            yield from self._close_text()
            name = str(function.get("name") or "")
            item_id = f"fc_{self.base}_{len(self.output)}"
            call_id = str(fragment.get("id") or f"call_{self.base}_{index}")
            tool = self.tools.get(name)
            call = self._open("custom" if tool is not None and tool.custom else "function", item_id, call_id, name)
            self.calls[index] = call
            item = call_item(item_id, call_id, name, "", self.tools, status="in_progress")
            yield self._event("response.output_item.added", output_index=call.index, item=item)
        elif function.get("name") and not call.name:
            call.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.parts.append(arguments)
            if call.kind == "function":  # a custom call's input is known only once its JSON is whole
                if not call.delta_head:
                    call.delta_head = _delta_head("response.function_call_arguments.delta", call, False)
                yield self._delta(call, arguments)

    def _close_reasoning(self) -> Iterator[bytes]:
        opened, self.reasoning = self.reasoning, None
        if opened is None:
            return
        text = "".join(opened.parts)
        yield self._event("response.reasoning_text.done", item_id=opened.id, output_index=opened.index,
                          content_index=0, text=text)
        item = reasoning_item(opened.id, text)
        self.output[opened.index] = item
        yield self._event("response.output_item.done", output_index=opened.index, item=item)

    def _close_text(self) -> Iterator[bytes]:
        opened, self.text = self.text, None
        if opened is None:
            return
        text = "".join(opened.parts)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        yield self._event("response.output_text.done", item_id=opened.id, output_index=opened.index,
                          content_index=0, text=text, logprobs=[])
        yield self._event("response.content_part.done", item_id=opened.id, output_index=opened.index,
                          content_index=0, part=part)
        item = message_item(opened.id, text)
        self.output[opened.index] = item
        yield self._event("response.output_item.done", output_index=opened.index, item=item)

    def _close_calls(self) -> Iterator[bytes]:
        calls, self.calls = self.calls, {}
        for call in sorted(calls.values(), key=lambda c: c.index):
            arguments = "".join(call.parts)
            item = call_item(call.id, call.call_id, call.name, arguments, self.tools)
            if call.kind == "custom":
                yield self._event("response.custom_tool_call_input.delta", item_id=call.id,
                                  output_index=call.index, delta=item["input"])
                yield self._event("response.custom_tool_call_input.done", item_id=call.id,
                                  output_index=call.index, input=item["input"])
            else:
                yield self._event("response.function_call_arguments.done", item_id=call.id,
                                  output_index=call.index, name=item["name"], arguments=arguments)
            self.output[call.index] = item
            yield self._event("response.output_item.done", output_index=call.index, item=item)

    def finish(self, usage: dict[str, Any]) -> bytes:
        """Close what is open, then `response.completed` (or `.incomplete`) with the usage recorded."""
        parts = [*self._close_reasoning(), *self._close_text(), *self._close_calls()]
        status = status_of(self.finish_reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        parts.append(self._event(kind, response=self._response(status, usage)))
        return b"".join(parts)

    def fail(self, code: str, message: str) -> bytes:
        """`response.failed`, for an exchange that broke off mid-stream."""
        return self._event("response.failed",
                           response=self._response("failed", error={"code": code, "message": message}))
