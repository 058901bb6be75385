"""POST /v1/embeddings: text in, vectors out; JSON only, passed through from the upstream.

Input is a string, a list of strings, a token array or a list of token arrays, as
OpenAI's API takes it. A request reserves its input tokens (there is no completion).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy_app.errors import bad_request
from proxy_app.exchange.tokens import TokenCounter
from proxy_app.fronts.openai_http import forward, model_of

MAX_INPUTS = 2048  # OpenAI's own limit on inputs per request
ENCODING_FORMATS = ("float", "base64")


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    )


def input_texts(value: Any) -> tuple[list[str], int] | None:
    """The texts and the count of pre-tokenised tokens of a valid `input`; None when it is not one."""
    if isinstance(value, str):
        return ([value], 0) if value else None
    if _is_tokens(value):
        return [], len(value)
    if isinstance(value, list) and value and len(value) <= MAX_INPUTS:
        if all(isinstance(v, str) and v for v in value):
            return list(value), 0
        if all(_is_tokens(v) for v in value):
            return [], sum(len(v) for v in value)
    return None


class EmbeddingsApi:
    """OpenAI Embeddings, as the exchange needs to know it."""

    name = "embeddings"
    translation = None  # no translation: only providers serving it natively

    def validate(self, body: Any) -> tuple[str, bool]:
        """A model, an `input` of a shape OpenAI takes, and the optional format fields; never a stream."""
        model = model_of(body)
        if input_texts(body.get("input")) is None:
            raise bad_request(
                f"'input' is required: a non-empty string, a list of at most {MAX_INPUTS} non-empty strings, "
                "an array of token ids or a list of them.", param="input",
            )
        encoding = body.get("encoding_format")
        if encoding is not None and encoding not in ENCODING_FORMATS:
            raise bad_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
        dimensions = body.get("dimensions")
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                       or dimensions < 1):
            raise bad_request("'dimensions' must be a positive integer.", param="dimensions")
        if body.get("stream") not in (None, False):
            raise bad_request("Embeddings are not streamed: leave 'stream' out.", param="stream")
        return model, False

    def upstream_body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """As the client sent it."""
        return body

    def archived_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """As the client sent it."""
        return body

    def prompt_chars(self, body: dict[str, Any]) -> int:
        """Characters (or token ids) of the input."""
        texts, tokens = input_texts(body.get("input")) or ([], 0)
        return sum(len(t) for t in texts) + tokens

    def count_prompt(self, counter: TokenCounter, body: dict[str, Any], model: str) -> int:
        """tiktoken's count of the texts, plus the token arrays' lengths."""
        texts, tokens = input_texts(body.get("input")) or ([], 0)
        return tokens + sum(counter.count_text(t, model) for t in texts)

    def completion_limit(self, body: dict[str, Any]) -> int | None:
        """Nothing is generated: reserve the input alone."""
        return 0


EMBEDDINGS = EmbeddingsApi()


async def embeddings(request: web.Request) -> web.StreamResponse:
    """Forward one embeddings request through the exchange."""
    return await forward(request, EMBEDDINGS)
