"""The Responses API through the official openai SDK: native pass-through, and translation to chat.

Provider `fake` serves the Responses API natively (its kind's default); provider `chatonly`
declares `apis: ["chat"]`, so a Responses request for its model goes out as a chat
completion and comes back rendered as a Response or its typed events.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
import requests

from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

REPLY = "Hello from the fake upstream, my friend."
SHELL_TOOL = {"type": "function", "name": "shell", "description": "Run a command.",
              "parameters": {"type": "object", "properties": {"command": {"type": "array",
                                                                        "items": {"type": "string"}}},
                             "required": ["command"]}, "strict": False}


@pytest.fixture
def gateway(make_gateway: Any) -> Gateway:
    gw: Gateway = make_gateway()
    chat_only = add_provider(gw.engine, "chatonly", gw.upstream.base_url, server_key="sk-chatonly-secret-0002",
                             apis=["chat"])
    add_model(gw.engine, chat_only, "deepseek-chat", input_price="0.27", output_price="1.10")
    gw.wait_config()
    return gw


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=10)
    yield sdk
    sdk.close()


def _cost(tokens_in: int, tokens_out: int, prices: tuple[str, str]) -> Decimal:
    return (tokens_in * Decimal(prices[0]) + tokens_out * Decimal(prices[1])) / 1_000_000


def _sse(response: requests.Response) -> list[dict[str, Any]]:
    """The data of each event of a Responses stream, checked against its `event:` line."""
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append(data)
    return events


# --- native pass-through --------------------------------------------------------------------


def test_native_json_passes_through_and_is_metered(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=30, completion_tokens=9, cached_tokens=10, reasoning_tokens=2)
    reply = client.responses.create(model="gpt-4o-mini", input="Say hello", instructions="Be brief.",
                                    max_output_tokens=50)
    assert reply.output_text == REPLY and reply.id == "resp_fake"
    assert reply.usage is not None and reply.usage.input_tokens_details.cached_tokens == 10
    (seen,) = gateway.upstream.requests_to("/v1/responses")
    assert seen.body == {"model": "gpt-4o-mini", "input": "Say hello", "instructions": "Be brief.",
                         "max_output_tokens": 50}
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.stream, row.status_code, row.token_source) == ("responses", False, 200, "upstream")
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.reasoning_tokens) == (30, 9, 10, 2)
    assert row.cost_usd == _cost(30, 9, ("0.15", "0.60"))


def test_native_stream_passes_events_through(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=12, completion_tokens=8,
                                        tool_calls=[("shell", '{"command": ["ls"]}')])
    with client.responses.stream(model="gpt-4o-mini", input="list files", tools=[SHELL_TOOL]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.function_call_arguments.delta" in kinds
    assert final.output_text == REPLY
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert (call.name, call.arguments, call.call_id) == ("shell", '{"command": ["ls"]}', "call_fake_0")
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.stream, row.status_code, row.prompt_tokens, row.completion_tokens) == (
        "responses", True, 200, 12, 8)


def test_native_stream_without_usage_is_counted_from_its_events(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(report_usage=False)
    r = requests.post(gateway.url + "/v1/responses", headers=gateway.headers(), timeout=10,
                      json={"model": "gpt-4o-mini", "input": "Say hello", "stream": True})
    assert _sse(r)[-1]["type"] == "response.completed"
    (row,) = gateway.wait_rows(1)
    # Counted from the text deltas it delivered: the reply is nine tokens in either encoding.
    assert (row.token_source, row.completion_tokens) == ("estimated", 9) and row.prompt_tokens > 0


def test_native_failure_mid_stream_is_recorded(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(error_after_chunks=2)
    r = requests.post(gateway.url + "/v1/responses", headers=gateway.headers(), timeout=10,
                      json={"model": "gpt-4o-mini", "input": "Say hello", "stream": True})
    events = _sse(r)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"] == "model overloaded mid-stream"
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.status_code, row.error_type) == ("responses", 502, "server_error")


# --- translated to chat ---------------------------------------------------------------------


def test_translated_json_reply(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=21, completion_tokens=7, cached_tokens=5)
    reply = client.responses.create(
        model="deepseek-chat", instructions="Be brief.", max_output_tokens=64, temperature=0.2,
        input=[{"role": "developer", "content": "Answer in English."},
               {"role": "user", "content": [{"type": "input_text", "text": "Say"},
                                            {"type": "input_text", "text": "hello"}]}],
        text={"format": {"type": "json_object"}}, reasoning={"effort": "low"},
    )
    assert reply.output_text == REPLY and reply.status == "completed" and reply.object == "response"
    assert reply.id.startswith("resp_") and reply.instructions == "Be brief."
    assert reply.usage is not None and (reply.usage.input_tokens, reply.usage.output_tokens) == (21, 7)
    assert reply.usage.input_tokens_details.cached_tokens == 5 and reply.usage.total_tokens == 28
    (seen,) = gateway.upstream.chat_requests()
    assert gateway.upstream.requests_to("/v1/responses") == []
    assert seen.headers["Authorization"] == "Bearer sk-chatonly-secret-0002"
    assert seen.body == {
        "model": "deepseek-chat", "max_tokens": 64, "temperature": 0.2, "reasoning_effort": "low",
        "response_format": {"type": "json_object"},
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "system", "content": "Answer in English."},
                     {"role": "user", "content": "Say\nhello"}],
    }
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.stream, row.status_code, row.prompt_tokens, row.completion_tokens) == (
        "responses", False, 200, 21, 7)
    assert reply.id == "resp_" + row.request_id.removeprefix("req_")
    # The model has no cached-input price: cached tokens cost what other input tokens do.
    assert row.cost_usd == _cost(21, 7, ("0.27", "1.10")) and row.cached_tokens == 5


def test_translated_json_tool_calls_and_reasoning(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(reply="", reasoning="Think first.", reasoning_tokens=3,
                                        tool_calls=[("shell", '{"command":["ls"]}'), ("shell", '{"command":["pwd"]}')])
    reply = client.responses.create(model="deepseek-chat", input="look around", tools=[SHELL_TOOL],
                                    tool_choice="required", parallel_tool_calls=True)
    kinds = [item.type for item in reply.output]
    assert kinds == ["reasoning", "function_call", "function_call"]
    assert reply.output[0].content[0].text == "Think first."  # type: ignore[union-attr,index]
    calls = [(i.call_id, i.name, i.arguments) for i in reply.output if i.type == "function_call"]
    assert calls == [("call_fake_0", "shell", '{"command":["ls"]}'), ("call_fake_1", "shell", '{"command":["pwd"]}')]
    (seen,) = gateway.upstream.chat_requests()
    assert seen.body["tools"] == [{"type": "function", "function": {
        "name": "shell", "description": "Run a command.", "parameters": SHELL_TOOL["parameters"], "strict": False}}]
    assert (seen.body["tool_choice"], seen.body["parallel_tool_calls"]) == ("required", True)
    (row,) = gateway.wait_rows(1)
    assert row.reasoning_tokens == 3


def test_translated_stream_with_tool_calls_through_the_sdk(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=40, completion_tokens=11,
                                        tool_calls=[("shell", '{"command": ["ls", "-la"]}')])
    with client.responses.stream(model="deepseek-chat", input="list files", tools=[SHELL_TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == REPLY and final.output_text == REPLY
    arguments = "".join(e.delta for e in events  # type: ignore[union-attr]
                        if e.type == "response.function_call_arguments.delta")
    assert arguments == '{"command": ["ls", "-la"]}'
    (message, call) = final.output
    assert message.type == "message" and call.type == "function_call"
    assert (call.call_id, call.name, call.arguments, call.status) == (
        "call_fake_0", "shell", '{"command": ["ls", "-la"]}', "completed")
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (40, 11)
    (seen,) = gateway.upstream.chat_requests()
    assert seen.body["stream"] is True and seen.body["stream_options"] == {"include_usage": True}
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.stream, row.prompt_tokens, row.completion_tokens) == ("responses", True, 40, 11)
    assert row.cost_usd == _cost(40, 11, ("0.27", "1.10"))


def test_translated_stream_failure_ends_with_response_failed(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(break_after_chunks=3)
    r = requests.post(gateway.url + "/v1/responses", headers=gateway.headers(), timeout=10,
                      json={"model": "deepseek-chat", "input": "Say hello", "stream": True})
    events = _sse(r)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["code"]
    (row,) = gateway.wait_rows(1)
    assert row.status_code == 502 and row.api == "responses"


def test_translated_stream_without_usage_reports_the_count(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(report_usage=False)
    r = requests.post(gateway.url + "/v1/responses", headers=gateway.headers(), timeout=10,
                      json={"model": "deepseek-chat", "input": "Say hello", "stream": True})
    completed = _sse(r)[-1]
    (row,) = gateway.wait_rows(1)
    assert row.token_source == "estimated" and row.prompt_tokens > 0
    assert completed["response"]["usage"]["input_tokens"] == row.prompt_tokens
    assert completed["response"]["usage"]["output_tokens"] == row.completion_tokens > 0


def test_async_client_and_max_tokens_incomplete(gateway: Gateway) -> None:
    async def main() -> tuple[Any, list[str]]:
        async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0) as sdk:
            reply = await sdk.responses.create(model="deepseek-chat", input="hi")
            stream = await sdk.responses.create(model="gpt-4o-mini", input="hi", stream=True)
            return reply, [event.type async for event in stream]

    reply, kinds = asyncio.run(main())
    assert reply.output_text == REPLY and kinds[-1] == "response.completed"
    assert [r.api for r in gateway.wait_rows(2)] == ["responses", "responses"]


# --- what the translation cannot carry ------------------------------------------------------


@pytest.mark.parametrize("extra", [
    {"previous_response_id": "resp_abc"},
    {"tools": [{"type": "web_search"}]},
    {"input": [{"type": "item_reference", "id": "msg_1"}]},
    {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
    {"background": True},
])
def test_what_needs_a_native_upstream_is_a_clear_400(gateway: Gateway, extra: dict[str, Any]) -> None:
    body = {"model": "deepseek-chat", "input": "hi", **extra}
    r = requests.post(gateway.url + "/v1/responses", headers=gateway.headers(), json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert "natively" in r.json()["error"]["message"] and r.headers["X-Request-Id"].startswith("req_")
    assert gateway.upstream.requests == [] and gateway.flushed_rows() == []


def test_native_only_requests_go_to_a_native_provider_of_the_model(gateway: Gateway) -> None:
    # gpt-4o-mini is served by the native `fake` and, at a higher priority, by the chat-only one.
    add_model(gateway.engine, 2, "gpt-4o-mini")
    with gateway.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE provider SET priority = 100 WHERE name = 'chatonly'")
    gateway.wait_config()
    r = requests.post(gateway.url + "/v1/responses", headers=gateway.headers(), timeout=10,
                      json={"model": "gpt-4o-mini", "input": "again", "previous_response_id": "resp_fake"})
    assert r.status_code == 200 and gateway.upstream.chat_requests() == []
    (seen,) = gateway.upstream.requests_to("/v1/responses")
    assert seen.body["previous_response_id"] == "resp_fake"


@pytest.mark.parametrize("body", [
    {"model": "gpt-4o-mini"},
    {"model": "gpt-4o-mini", "input": 5},
    {"model": "gpt-4o-mini", "input": ["not an item"]},
    {"model": "gpt-4o-mini", "input": [{"role": "user"}]},
    {"model": "gpt-4o-mini", "input": [{"role": "tool", "content": "x"}]},
    {"model": "gpt-4o-mini", "input": "x", "tools": [{"type": "function"}]},
    {"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 0},
    {"model": "gpt-4o-mini", "input": "x", "instructions": ["no"]},
    {"model": "gpt-4o-mini", "input": "x", "stream": "yes"},
])
def test_bad_bodies_are_400_and_reach_nobody(gateway: Gateway, body: dict[str, Any]) -> None:
    r = requests.post(gateway.url + "/v1/responses", headers=gateway.headers(), json=body, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert gateway.upstream.requests == [] and gateway.flushed_rows() == []


# --- everything chat has ----------------------------------------------------------------------


def test_archive_conversation_and_access_log(make_gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nexusai.proxy.access")
    gw: Gateway = make_gateway(archive_messages=True)
    chat_only = add_provider(gw.engine, "chatonly", gw.upstream.base_url, apis=["chat"])
    add_model(gw.engine, chat_only, "deepseek-chat")
    gw.wait_config()
    gw.upstream.default = Scenario(tool_calls=[("shell", '{"command":["ls"]}')])
    for model, stream in (("gpt-4o-mini", False), ("gpt-4o-mini", True), ("deepseek-chat", False),
                          ("deepseek-chat", True)):
        r = requests.post(gw.url + "/v1/responses", headers={**gw.headers(), "X-Conversation-Id": "conv-resp"},
                          json={"model": model, "input": "Archive this.", "stream": stream, "tools": [SHELL_TOOL]},
                          timeout=10)
        assert r.status_code == 200 and r.headers["X-Conversation-Id"] == "conv-resp"
        assert r.content
    rows = gw.wait_rows(4)
    assert {row.conversation_id for row in rows} == {"conv-resp"}
    gw.proxy.stop()  # flushes the writers
    entries = [json.loads(line) for path in sorted(gw.settings.messages_dir.rglob("*.jsonl"))
               for line in path.read_text().splitlines()]
    assert len(entries) == 4
    for entry in entries:
        assert entry["request"]["input"] == "Archive this."  # as the client sent it
        assert entry["reply"]["content"] == REPLY
        assert entry["reply"]["tool_calls"][0]["function"] == {"name": "shell", "arguments": '{"command":["ls"]}'}
    access = [r.getMessage() for r in caplog.records if r.name == "nexusai.proxy.access"]
    assert sum(" http api=responses " in line and " status=200 " in line for line in access) == 4


def test_failover_from_a_native_provider_to_a_chat_only_one(gateway: Gateway, client: openai.OpenAI) -> None:
    # The native provider of gpt-4o-mini fails with 503; the chat-only one (lower priority) answers.
    add_model(gateway.engine, 2, "gpt-4o-mini", upstream_name="gpt-4o-mini-backup")
    with gateway.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE provider SET priority = 10 WHERE name = 'fake'")
    gateway.wait_config()
    gateway.upstream.scenarios["gpt-4o-mini"] = Scenario(status=503)
    reply = client.responses.create(model="gpt-4o-mini", input="hi")
    assert reply.output_text == REPLY and reply.object == "response"
    assert [r.path for r in gateway.upstream.requests] == ["/v1/responses", "/v1/chat/completions"]
    (row,) = gateway.wait_rows(1)
    assert (row.provider_name, row.api, row.status_code) == ("chatonly", "responses", 200)


def test_limits_reserve_max_output_tokens(gateway: Gateway) -> None:
    # While it runs a request holds its prompt (8 tokens as chat counts "hi") plus max_output_tokens.
    limited = "nx-responses-limited-key-0123456789abcd"
    add_key(gateway.engine, limited, name="resp", tpm=200)
    gateway.wait_config()
    r = requests.post(gateway.url + "/v1/responses", headers={"x-api-key": limited}, timeout=10,
                      json={"model": "deepseek-chat", "input": "hi", "max_output_tokens": 50})
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "200"
    assert r.headers["x-ratelimit-remaining-tokens"] == str(200 - 8 - 50)
    gateway.wait_rows(1)  # settled: the 24 tokens the fake reported are in the window
    r = requests.post(gateway.url + "/v1/responses", headers=gateway.headers(limited), timeout=10,
                      json={"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 100})
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-tokens"] == str(200 - 24 - 8 - 100)
