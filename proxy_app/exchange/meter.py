"""What one exchange delivered: reply pieces, upstream usage, timings.

Fed chunk by chunk for streams or once for JSON replies, in the hub format (chat
completions, legacy completions) or, for Responses passed through natively, as
Responses events and objects; turned into token counts (upstream's figures when it
sent them, tiktoken's otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy_app.exchange.api import Api
from proxy_app.exchange.tokens import TokenCounter
from proxy_app.hub import TokenUsage

_RESPONSES_CALLS = ("function_call", "custom_tool_call")


@dataclass(slots=True)
class ToolCallParts:
    """A tool call being re-assembled from stream fragments."""

    id: str | None = None
    type: str | None = None
    name: list[str] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The assembled tool call in OpenAI's message shape."""
        return {
            "id": self.id,
            "type": self.type or "function",
            "function": {"name": "".join(self.name), "arguments": "".join(self.arguments)},
        }


@dataclass(slots=True)
class Usage:
    """Final token figures of one exchange."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    source: str  # "upstream" or "estimated"
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0


class Meter:
    """Accumulates the reply of one exchange."""

    __slots__ = ("content", "reasoning", "tool_calls", "finish_reason", "upstream_usage", "ttft_ms", "role")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, ToolCallParts] = {}
        self.finish_reason: str | None = None
        self.upstream_usage: TokenUsage | None = None
        self.ttft_ms: float | None = None
        self.role = "assistant"

    def add_chunk(self, obj: dict[str, Any]) -> list[str]:
        """Record a delivered stream chunk; returns its content pieces (for the WebSocket)."""
        pieces: list[str] = []
        choices = obj.get("choices")
        if not isinstance(choices, list):
            kind = obj.get("type")
            if isinstance(kind, str):
                if kind.startswith("response."):
                    self._add_responses_event(kind, obj)
                else:
                    self._add_anthropic_event(kind, obj)
            return pieces
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            text = choice.get("text")
            if isinstance(text, str) and text:
                self.content.append(text)  # a legacy completion's chunk
                pieces.append(text)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                text = delta.get("content")
                if isinstance(text, str) and text:
                    self.content.append(text)
                    pieces.append(text)
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    self.reasoning.append(reasoning)
                calls = delta.get("tool_calls")
                if isinstance(calls, list):
                    self._add_tool_fragments(calls)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return pieces

    def _add_tool_fragments(self, calls: list[Any]) -> None:
        for call in calls:
            if not isinstance(call, dict):
                continue
            index = call.get("index", len(self.tool_calls))
            parts = self.tool_calls.setdefault(index if isinstance(index, int) else 0, ToolCallParts())
            if call.get("id"):
                parts.id = call["id"]
            if call.get("type"):
                parts.type = call["type"]
            function = call.get("function")
            if isinstance(function, dict):
                if isinstance(function.get("name"), str):
                    parts.name.append(function["name"])
                if isinstance(function.get("arguments"), str):
                    parts.arguments.append(function["arguments"])

    def _add_responses_event(self, kind: str, obj: dict[str, Any]) -> None:
        delta = obj.get("delta")
        if kind == "response.output_text.delta":
            if isinstance(delta, str):
                self.content.append(delta)
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            if isinstance(delta, str):
                self.reasoning.append(delta)
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            index = obj.get("output_index")
            if isinstance(delta, str) and isinstance(index, int):
                self.tool_calls.setdefault(index, ToolCallParts()).arguments.append(delta)
        elif kind == "response.output_item.added":
            item, index = obj.get("item"), obj.get("output_index")
            if isinstance(item, dict) and isinstance(index, int) and item.get("type") in _RESPONSES_CALLS:
                parts = self.tool_calls.setdefault(index, ToolCallParts())
                parts.id = item.get("call_id")
                parts.type = "function" if item.get("type") == "function_call" else "custom"
                if isinstance(item.get("name"), str):
                    parts.name.append(item["name"])
        elif kind in ("response.completed", "response.incomplete"):
            response = obj.get("response")
            status = response.get("status") if isinstance(response, dict) else None
            self.finish_reason = status if isinstance(status, str) else kind[9:]

    def _add_anthropic_event(self, kind: str, obj: dict[str, Any]) -> None:
        index = obj.get("index")
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if not isinstance(delta, dict):
                return
            if isinstance(delta.get("text"), str):
                self.content.append(delta["text"])
            elif isinstance(delta.get("thinking"), str):
                self.reasoning.append(delta["thinking"])
            elif isinstance(delta.get("partial_json"), str) and isinstance(index, int):
                self.tool_calls.setdefault(index, ToolCallParts()).arguments.append(delta["partial_json"])
        elif kind == "content_block_start":
            block = obj.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use" and isinstance(index, int):
                parts = self.tool_calls.setdefault(index, ToolCallParts(id=block.get("id"), type="function"))
                if isinstance(block.get("name"), str):
                    parts.name.append(block["name"])
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.finish_reason = delta["stop_reason"]

    def _add_anthropic_content(self, content: list[Any]) -> None:
        for index, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                self.content.append(block["text"])
            elif block.get("type") == "thinking" and isinstance(block.get("thinking"), str):
                self.reasoning.append(block["thinking"])
            elif block.get("type") == "tool_use":
                parts = self.tool_calls.setdefault(index, ToolCallParts(id=block.get("id"), type="function"))
                if isinstance(block.get("name"), str):
                    parts.name.append(block["name"])
                parts.arguments.append(orjson.dumps(block.get("input") or {}).decode())

    def _add_responses_output(self, output: list[Any]) -> None:
        for index, item in enumerate(output):
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "message":
                for part in item.get("content") or ():
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        self.content.append(part["text"])
            elif kind == "reasoning":
                for group in ("summary", "content"):
                    for part in item.get(group) or ():
                        if isinstance(part, dict) and isinstance(part.get("text"), str):
                            self.reasoning.append(part["text"])
            elif kind in _RESPONSES_CALLS:
                parts = self.tool_calls.setdefault(index, ToolCallParts(id=item.get("call_id")))
                parts.type = "function" if kind == "function_call" else "custom"
                if isinstance(item.get("name"), str):
                    parts.name.append(item["name"])
                arguments = item.get("arguments", item.get("input"))
                if isinstance(arguments, str):
                    parts.arguments.append(arguments)

    def add_completion(self, obj: dict[str, Any]) -> None:
        """Record a whole (non-stream) reply: a chat or legacy completion, or a Responses object."""
        choices = obj.get("choices")
        if not isinstance(choices, list):
            output = obj.get("output")
            if isinstance(output, list):
                self._add_responses_output(output)
                status = obj.get("status")
                if isinstance(status, str):
                    self.finish_reason = status
            elif obj.get("type") == "message" and isinstance(obj.get("content"), list):
                self._add_anthropic_content(obj["content"])  # an Anthropic message, passed through
                if isinstance(obj.get("stop_reason"), str):
                    self.finish_reason = obj["stop_reason"]
            return
        for n, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("text"), str):
                self.content.append(choice["text"])  # a legacy completion
            message = choice.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("content"), str):
                    self.content.append(message["content"])
                reasoning = message.get("reasoning_content") or message.get("reasoning")
                if isinstance(reasoning, str):
                    self.reasoning.append(reasoning)
                calls = message.get("tool_calls")
                if isinstance(calls, list):
                    for i, call in enumerate(calls):
                        if isinstance(call, dict):
                            self._add_tool_fragments([{**call, "index": n * 1000 + i}])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def content_chars(self) -> int:
        """Characters of reply content so far (to decide whether counting may run on the loop)."""
        return sum(len(c) for c in self.content)

    def reply_text(self) -> str:
        """The delivered reply content, re-assembled."""
        return "".join(self.content)

    def completion_text(self) -> str:
        """Everything in the reply that the upstream bills as completion."""
        parts = [self.reply_text(), "".join(self.reasoning)]
        for call in self.tool_calls.values():
            parts.append("".join(call.name))
            parts.append("".join(call.arguments))
        return "".join(parts)

    def reply_message(self) -> dict[str, Any]:
        """The reply as an assistant message (for the archive)."""
        message: dict[str, Any] = {"role": self.role, "content": self.reply_text()}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i].as_dict() for i in sorted(self.tool_calls)]
        return message

    def usage(self, counter: TokenCounter, api: Api, body: dict[str, Any], model: str,
              delivered_any: bool = True) -> Usage:
        """Upstream's usage when reported, else tiktoken's count of prompt and delivered reply."""
        up = self.upstream_usage
        if up is not None:
            return Usage(up.prompt, up.completion, up.total, "upstream", up.cached, up.reasoning, up.cache_write)
        if not delivered_any:
            return Usage(0, 0, 0, "estimated")
        prompt = api.count_prompt(counter, body, model)
        completion = counter.count_text(self.completion_text(), model)
        return Usage(prompt, completion, prompt + completion, "estimated")
