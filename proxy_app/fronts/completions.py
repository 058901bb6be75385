"""POST /v1/completions: the legacy Completions API, JSON or SSE, metered as chat is."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy_app.errors import bad_request
from proxy_app.exchange.tokens import TokenCounter
from proxy_app.fronts.openai_http import forward, model_of, stream_flag, with_stream_usage

DEFAULT_MAX_TOKENS = 16  # the legacy API's own default
MAX_PROMPTS = 2048


def prompt_texts(value: Any) -> tuple[list[str], int] | None:
    """The texts and the count of pre-tokenised tokens of a valid `prompt`; None when it is not one."""
    if isinstance(value, str):
        return [value], 0
    if isinstance(value, list) and value and len(value) <= MAX_PROMPTS:
        if all(isinstance(v, str) for v in value):
            return list(value), 0
        if all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            return [], len(value)
        if all(isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v) for v in value):
            return [], sum(len(v) for v in value)
    return None


class CompletionsApi:
    """OpenAI legacy Completions, as the exchange needs to know it."""

    name = "completions"
    translation = None  # no translation: only providers serving it natively

    def validate(self, body: Any) -> tuple[str, bool]:
        """A model, a `prompt` of a shape OpenAI takes, and a boolean `stream`."""
        model = model_of(body)
        if prompt_texts(body.get("prompt")) is None:
            raise bad_request(
                "'prompt' is required: a string, a list of strings, an array of token ids or a list of them.",
                param="prompt",
            )
        return model, stream_flag(body)

    def upstream_body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """Streams ask for usage, as chat's do."""
        return with_stream_usage(body, stream)

    def archived_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """As the client sent it."""
        return body

    def prompt_chars(self, body: dict[str, Any]) -> int:
        """Characters (or token ids) of the prompt."""
        texts, tokens = prompt_texts(body.get("prompt")) or ([], 0)
        return sum(len(t) for t in texts) + tokens

    def count_prompt(self, counter: TokenCounter, body: dict[str, Any], model: str) -> int:
        """tiktoken's count of the prompt texts, plus the token arrays' lengths."""
        texts, tokens = prompt_texts(body.get("prompt")) or ([], 0)
        return tokens + sum(counter.count_text(t, model) for t in texts)

    def completion_limit(self, body: dict[str, Any]) -> int | None:
        """`max_tokens` (the legacy API generates 16 when it is not set), times `n`."""
        limit = body.get("max_tokens")
        tokens = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else DEFAULT_MAX_TOKENS
        n = body.get("n")
        return tokens * (n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1)


COMPLETIONS = CompletionsApi()


async def completions(request: web.Request) -> web.StreamResponse:
    """Forward one legacy completion through the exchange."""
    return await forward(request, COMPLETIONS)
