"""The /ws/chat message shapes: deltas from stream chunks and whole completions, ids, errors."""

from __future__ import annotations

import pytest

from proxy_app.errors import ProxyError
from proxy_app.fronts.ws_protocol import completion_messages, delta_messages, error_message, parse_chat_id

TOOL_CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}


def chunk(delta: dict, index: int = 0) -> dict:
    return {"object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta, "finish_reason": None}]}


def test_content_and_tool_call_deltas_pass_through() -> None:
    assert delta_messages("c1", chunk({"content": "Hi"})) == [{"type": "delta", "id": "c1", "content": "Hi"}]
    assert delta_messages("c1", chunk({"tool_calls": [TOOL_CALL]})) == [
        {"type": "delta", "id": "c1", "tool_calls": [TOOL_CALL]}
    ]
    assert delta_messages(7, chunk({"reasoning_content": "hmm"}, index=1)) == [
        {"type": "delta", "id": 7, "index": 1, "reasoning_content": "hmm"}
    ]


@pytest.mark.parametrize("obj", [chunk({"role": "assistant", "content": ""}), chunk({}), {"choices": []}, {"x": 1}])
def test_chunks_without_reply_make_no_delta(obj: dict) -> None:
    assert delta_messages("c1", obj) == []


def test_whole_completion_becomes_deltas() -> None:
    call = {k: v for k, v in TOOL_CALL.items() if k != "index"}
    completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "tool_calls": [call]},
                               "finish_reason": "tool_calls"}]}
    assert completion_messages("c1", completion) == [
        {"type": "delta", "id": "c1", "content": "Hello", "tool_calls": [{"index": 0, **call}]}
    ]


@pytest.mark.parametrize("value", [None, "", True, 1.5, [], "x" * 129])
def test_bad_ids_are_refused(value: object) -> None:
    with pytest.raises(ProxyError) as exc:
        parse_chat_id(value)
    assert exc.value.status == 400 and exc.value.param == "id"


def test_error_message_carries_retry_after() -> None:
    exc = ProxyError(429, "slow down", type="rate_limit_error", code="rate_limit_exceeded",
                     headers={"Retry-After": "7"})
    assert error_message("c1", exc, "req_1") == {
        "type": "error", "id": "c1", "status": 429, "request_id": "req_1", "retry_after": 7,
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"},
    }
