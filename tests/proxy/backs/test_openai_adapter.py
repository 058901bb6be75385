"""The OpenAI adapter's reading of replies: usage, cached and reasoning details, errors, embeddings."""

from __future__ import annotations

import orjson
import pytest

from proxy_app.backs.openai import OpenAIAdapter
from proxy_app.hub import TokenUsage

ADAPTER = OpenAIAdapter()


def test_usage_with_details() -> None:
    obj = {"usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                     "prompt_tokens_details": {"cached_tokens": 64},
                     "completion_tokens_details": {"reasoning_tokens": 8}}}
    assert ADAPTER.usage(obj) == TokenUsage(100, 20, 120, cached=64, reasoning=8)
    assert ADAPTER.usage({"usage": {"completion_tokens": 3}}) is None  # no prompt count: not usage we can bill
    assert ADAPTER.usage({"usage": {"prompt_tokens": 5}}) == TokenUsage(5, 0, 5)


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 8, "total_tokens": 8},
    {"prompt_tokens": 8, "total_tokens": 8, "prompt_tokens_details": {"cached_tokens": 0, "text_tokens": 8}},
])
def test_an_embeddings_reply_is_read_for_its_usage_only(usage: dict) -> None:
    vectors = [{"object": "embedding", "index": i, "embedding": [0.5] * 64} for i in range(3)]
    raw = orjson.dumps({"object": "list", "data": vectors, "model": "m", "usage": usage})
    assert ADAPTER.decode_reply("embeddings", raw) == {"usage": usage}
    assert ADAPTER.usage({"usage": usage}) == TokenUsage(8, 0, 8)


@pytest.mark.parametrize("raw", [
    b'{"object": "list", "data": []}',  # no usage at all
    b'{"data": [], "usage": "none"}',
    b'{"data": [], "usage": {"prompt_tokens": 8',  # cut off
    b"not json",
])
def test_an_embeddings_reply_without_readable_usage_has_none(raw: bytes) -> None:
    assert ADAPTER.decode_reply("embeddings", raw) is None


def test_an_error_event_is_a_fault() -> None:
    fault = ADAPTER.fault({"error": {"message": "overloaded", "code": "overloaded"}})
    assert fault is not None and (fault.status, fault.message, fault.code) == (502, "overloaded", "overloaded")
    assert ADAPTER.fault({"choices": []}) is None
