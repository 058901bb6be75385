"""The /ws/chat wire protocol: message ids, server message shapes, close codes.

Every server message is a JSON object with a `type`; those about one chat
request carry that request's client-chosen `id`. A chat ends with exactly one
`done` or one `error`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from proxy_app.errors import ProxyError, bad_request
from proxy_app.exchange import ClientGone

ChatId = str | int
Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]

CLOSE_AUTH_FAILED = 4401  # the 4000-4999 range is the application's; mirrors HTTP 401
MAX_ID_LENGTH = 128

__all__ = ["ClientGone", "completion_messages", "delta_messages", "error_message", "parse_chat_id"]


def parse_chat_id(value: Any) -> ChatId:
    """The request id of a client message: a non-empty string or an integer."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise bad_request("'id' is required: a non-empty string or an integer naming the request.", param="id")
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        raise bad_request(f"'id' must be at most {MAX_ID_LENGTH} characters.", param="id")
    chat_id: ChatId = value
    return chat_id


def error_message(chat_id: ChatId | None, exc: ProxyError, request_id: str | None = None) -> Message:
    """An `error` message: the OpenAI error object and the HTTP status it stands for."""
    message: Message = {"type": "error", "id": chat_id, "status": exc.status, "error": exc.body()}
    if request_id is not None:
        message["request_id"] = request_id
    retry_after = exc.headers.get("Retry-After")
    if retry_after is not None and retry_after.isdigit():
        message["retry_after"] = int(retry_after)  # what HTTP says in the Retry-After header
    return message


def delta_messages(chat_id: ChatId, chunk: dict[str, Any]) -> list[Message]:
    """One `delta` per choice of a stream chunk that carries content, reasoning or tool calls."""
    out: list[Message] = []
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return out
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
            continue
        message = _delta(chat_id, choice["delta"], choice.get("index", 0))
        if message is not None:
            out.append(message)
    return out


def completion_messages(chat_id: ChatId, completion: dict[str, Any]) -> list[Message]:
    """The `delta`s for an upstream that answered a whole completion instead of a stream."""
    out: list[Message] = []
    choices = completion.get("choices")
    if not isinstance(choices, list):
        return out
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            continue
        reply = dict(choice["message"])
        calls = reply.get("tool_calls")
        if isinstance(calls, list):
            reply["tool_calls"] = [{"index": i, **c} if isinstance(c, dict) else c for i, c in enumerate(calls)]
        message = _delta(chat_id, reply, choice.get("index", 0))
        if message is not None:
            out.append(message)
    return out


def _delta(chat_id: ChatId, delta: dict[str, Any], index: Any) -> Message | None:
    message: Message = {"type": "delta", "id": chat_id}
    if index not in (0, None):
        message["index"] = index
    content = delta.get("content")
    if isinstance(content, str) and content:
        message["content"] = content
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        message["reasoning_content"] = reasoning
    refusal = delta.get("refusal")
    if isinstance(refusal, str) and refusal:
        message["refusal"] = refusal
    calls = delta.get("tool_calls")
    if isinstance(calls, list) and calls:
        message["tool_calls"] = calls
    return message if len(message) > 2 + ("index" in message) else None
