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


# --- the Responses API, passed through ---------------------------------------------------------

RESPONSES_USAGE = {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 16}, "output_tokens": 9,
                   "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 49}


def _event(kind: str, **fields: object) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"


def test_responses_usage_from_a_reply_and_from_its_completed_event() -> None:
    expected = TokenUsage(40, 9, 49, cached=16, reasoning=4)
    assert ADAPTER.usage({"object": "response", "usage": RESPONSES_USAGE}) == expected
    assert ADAPTER.usage({"type": "response.completed", "response": {"usage": RESPONSES_USAGE}}) == expected
    assert ADAPTER.usage({"type": "response.created", "response": {"usage": None}}) is None


def test_responses_stream_marks_its_end_and_skips_what_repeats_the_deltas() -> None:
    decoder = ADAPTER.stream_decoder("responses")
    raw = b"".join([
        _event("response.created", response={"id": "resp_1"}),
        _event("response.output_text.delta", delta="Hi"),
        _event("response.output_text.done", text="Hi"),
        _event("response.output_item.done", item={"type": "message"}),
    ])
    pieces = decoder.feed(raw[:50]) + decoder.feed(raw[50:])
    assert [p.obj for p in pieces] == [None, {"type": "response.output_text.delta", "delta": "Hi"}, None, None]
    assert b"".join(p.raw for p in pieces) == raw and not any(p.done for p in pieces)
    (end,) = decoder.feed(_event("response.completed", response={"usage": RESPONSES_USAGE}))
    assert end.done and ADAPTER.usage(end.obj or {}) == TokenUsage(40, 9, 49, cached=16, reasoning=4)
    # Without `event:` lines (some servers send data only), the type inside still tells.
    (bare,) = ADAPTER.stream_decoder("responses").feed(b'data: {"type": "response.incomplete"}\n\n')
    assert bare.done


def test_responses_failures_are_faults() -> None:
    failed = {"type": "response.failed", "response": {"error": {"code": "server_error", "message": "boom"}}}
    fault = ADAPTER.fault(failed)
    assert fault is not None and (fault.code, fault.message) == ("server_error", "boom")
    fault = ADAPTER.fault({"type": "error", "code": "rate_limit_exceeded", "message": "slow down"})
    assert fault is not None and (fault.code, fault.message) == ("rate_limit_exceeded", "slow down")
    assert ADAPTER.fault({"type": "response.output_text.delta", "delta": "x"}) is None
    assert ADAPTER.fault({"object": "response", "error": None}) is None
