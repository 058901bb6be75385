"""POST /v1/chat/completions: the Chat Completions API over HTTP, as JSON or SSE.

The worked example of a front: `ChatApi` tells the exchange what a chat request is
(validation, the body sent upstream, how to count its prompt), and the OpenAI HTTP
renderer (`fronts/openai_http.py`, shared with the other OpenAI-shaped fronts) puts the
exchange's events on the wire. Chat is the hub format, so a chat reply
from an OpenAI-compatible upstream passes through as the upstream's own bytes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy_app.errors import bad_request
from proxy_app.exchange.tokens import TokenCounter, messages_char_size
from proxy_app.fronts.openai_http import forward, model_of, stream_flag, with_stream_usage


class ChatApi:
    """OpenAI Chat Completions, as the exchange needs to know it."""

    name = "chat"
    translation = None  # chat is the hub format: nothing to translate to

    def validate(self, body: Any) -> tuple[str, bool]:
        """Just enough validation: a JSON object with a model string and a non-empty messages list."""
        model = model_of(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' is required and must be a non-empty list.", param="messages")
        return model, stream_flag(body)

    def upstream_body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """Streams ask for usage, so a streamed request is never recorded as free."""
        return with_stream_usage(body, stream)

    def archived_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """As the client sent it."""
        return body

    def prompt_chars(self, body: dict[str, Any]) -> int:
        """Characters in the messages."""
        return messages_char_size(body.get("messages"))

    def count_prompt(self, counter: TokenCounter, body: dict[str, Any], model: str) -> int:
        """tiktoken's count of the messages, as OpenAI bills them."""
        return counter.count_messages(body.get("messages"), model)

    def completion_limit(self, body: dict[str, Any]) -> int | None:
        """`max_completion_tokens`, else `max_tokens`."""
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


CHAT = ChatApi()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Forward one chat completion through the exchange."""
    return await forward(request, CHAT)
