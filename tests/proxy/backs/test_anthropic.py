"""The `anthropic` provider kind against a fake written from Anthropic's API reference.

Provider `claude` (kind `anthropic`, its URL given without /v1 as Anthropic documents it)
serves claude-sonnet-4-5 at 3 / 15 USD per 1M tokens, 0.30 cache read, 3.75 cache write.
Messages clients pass through; chat (and Responses) clients are translated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
import requests

from tests.proxy.conftest import Gateway
from tests.proxy.test_ws_chat import chat, open_ws, send, text_of, until_end
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_model, add_provider

pytestmark = pytest.mark.db

MODEL = "claude-sonnet-4-5"
SERVER_KEY = "sk-ant-upstream-secret-0003"
REPLY = "Hello from the fake upstream, my friend."
WEATHER_FN = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture
def gateway(make_gateway: Any) -> Gateway:
    gw: Gateway = make_gateway()
    claude = add_provider(gw.engine, "claude", gw.upstream.base_url.removesuffix("/v1"), server_key=SERVER_KEY,
                          kind="anthropic")
    add_model(gw.engine, claude, MODEL, input_price="3", output_price="15", cached_input_price=Decimal("0.30"),
              cache_write_price=Decimal("3.75"))
    gw.wait_config()
    return gw


@pytest.fixture
def claude(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=10)
    yield sdk
    sdk.close()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=10)
    yield sdk
    sdk.close()


def _cost(uncached: int, read: int, written: int, output: int) -> Decimal:
    return (uncached * Decimal(3) + read * Decimal("0.30") + written * Decimal("3.75")
            + output * Decimal(15)) / 1_000_000


# --- Messages clients: passed through -----------------------------------------------------------


def test_messages_pass_through_with_cache_usage(gateway: Gateway, claude: anthropic.Anthropic) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=1000, cached_tokens=600, cache_write_tokens=300,
                                        completion_tokens=7)
    reply = claude.messages.create(model=MODEL, max_tokens=50, system=[{"type": "text", "text": "Be brief.",
                                                                        "cache_control": {"type": "ephemeral"}}],
                                   messages=[{"role": "user", "content": "Say hello"}],
                                   extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    assert reply.id == "msg_fake" and reply.content[0].text == REPLY  # type: ignore[union-attr]
    assert (reply.usage.input_tokens, reply.usage.cache_read_input_tokens,
            reply.usage.cache_creation_input_tokens) == (100, 600, 300)
    (seen,) = gateway.upstream.requests_to("/v1/messages")
    assert seen.headers["x-api-key"] == SERVER_KEY and "Authorization" not in seen.headers
    assert seen.headers["anthropic-version"] == claude.default_headers["anthropic-version"]  # the client's own
    assert seen.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert seen.body["system"][0]["cache_control"] == {"type": "ephemeral"}  # untouched
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.provider_name, row.prompt_tokens, row.cached_tokens, row.cache_write_tokens,
            row.completion_tokens) == ("messages", "claude", 1000, 600, 300, 7)
    assert row.cost_usd == _cost(100, 600, 300, 7)


def test_messages_stream_passes_events_through(gateway: Gateway, claude: anthropic.Anthropic) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=40, completion_tokens=9, reasoning="Think.",
                                        tool_calls=[("get_weather", '{"city": "Paris"}')])
    with claude.messages.stream(model=MODEL, max_tokens=50,
                                messages=[{"role": "user", "content": "Weather?"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].signature == "sig-fake"  # type: ignore[union-attr]  # as the upstream sent it
    assert final.content[2].input == {"city": "Paris"} and final.stop_reason == "tool_use"  # type: ignore[union-attr]
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.stream, row.prompt_tokens, row.completion_tokens) == ("messages", True, 40, 9)


def test_messages_errors_pass_through_in_anthropics_shape(gateway: Gateway, claude: anthropic.Anthropic) -> None:
    gateway.upstream.default = Scenario(status=529)
    with pytest.raises(anthropic.APIStatusError) as busy:
        claude.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert busy.value.status_code == 529
    assert busy.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}  # type: ignore[index]


# --- chat clients: translated -----------------------------------------------------------------


def test_chat_translated_to_messages(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=50, cached_tokens=20, completion_tokens=7)
    reply = client.chat.completions.create(
        model=MODEL, temperature=1.5, stop="END", user="u-7",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
    )
    assert reply.choices[0].message.content == REPLY and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (50, 7)
    (seen,) = gateway.upstream.requests_to("/v1/messages")
    assert seen.body == {"model": MODEL, "max_tokens": 4096, "system": "Be brief.", "temperature": 1,
                         "stop_sequences": ["END"], "metadata": {"user_id": "u-7"},
                         "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]}
    assert seen.headers["anthropic-version"] == "2023-06-01"
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.prompt_tokens, row.cached_tokens, row.completion_tokens) == ("chat", 50, 20, 7)
    assert row.cost_usd == _cost(30, 20, 0, 7)


def test_chat_stream_with_tools_translated(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(reply="", prompt_tokens=60, completion_tokens=12,
                                        tool_calls=[("get_weather", '{"city": "Paris"}')])
    stream = client.chat.completions.create(
        model=MODEL, stream=True, tools=[WEATHER_FN], tool_choice="required", parallel_tool_calls=False,  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": None, "tool_calls": [{
                      "id": "toolu_old", "type": "function",
                      "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
                  {"role": "tool", "tool_call_id": "toolu_old", "content": "Rainy"},
                  {"role": "user", "content": "And Paris?"}],
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0][0].id == "toolu_fake_0" and calls[0][0].function.name == "get_weather"  # type: ignore[index,union-attr]
    assert "".join(c[0].function.arguments for c in calls) == '{"city": "Paris"}'  # type: ignore[index,union-attr,misc]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 60
    (seen,) = gateway.upstream.requests_to("/v1/messages")
    assert seen.body["tools"] == [{"name": "get_weather", "description": "Weather of a city.",
                                   "input_schema": WEATHER_FN["function"]["parameters"]}]  # type: ignore[index]
    assert seen.body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert seen.body["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_old", "name": "get_weather",
                                           "input": {"city": "Rome"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_old", "content": "Rainy"},
                                     {"type": "text", "text": "And Paris?"}]}]
    (row,) = gateway.wait_rows(1)
    assert (row.stream, row.prompt_tokens, row.completion_tokens) == (True, 60, 12)


def test_chat_errors_and_mid_stream_faults(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(status=529)
    with pytest.raises(openai.APIStatusError) as busy:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert busy.value.status_code == 529 and "Overloaded" in busy.value.message
    gateway.upstream.default = Scenario(error_after_chunks=2)
    r = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(), timeout=10,
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]})
    last = json.loads(r.text.strip().split("\n\n")[-1].removeprefix("data: "))
    assert last["error"]["code"] == "overloaded_error"
    rows = gateway.wait_rows(2)
    assert [row.status_code for row in rows] == [529, 502]


def test_responses_reach_anthropic_through_chat(gateway: Gateway, client: openai.OpenAI) -> None:
    reply = client.responses.create(model=MODEL, input="Say hello", instructions="Be brief.")
    assert reply.output_text == REPLY
    (seen,) = gateway.upstream.requests_to("/v1/messages")
    assert seen.body["system"] == "Be brief." and seen.body["messages"][0]["content"][0]["text"] == "Say hello"
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.provider_name) == ("responses", "claude")


def test_one_model_name_on_both_kinds_fails_over(gateway: Gateway, claude: anthropic.Anthropic) -> None:
    # The anthropic provider (priority 10) is down; the OpenAI-compatible one answers, translated.
    add_model(gateway.engine, gateway.provider_id, MODEL, upstream_name="claude-via-openai")
    with gateway.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE provider SET priority = 10 WHERE name = 'claude'")
    gateway.wait_config()
    gateway.upstream.scenarios[MODEL] = Scenario(status=503)
    reply = claude.messages.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "x"}])
    assert reply.content[0].text == REPLY  # type: ignore[union-attr]
    assert [r.path for r in gateway.upstream.requests] == ["/v1/messages", "/v1/chat/completions"]
    (row,) = gateway.wait_rows(1)
    assert (row.provider_name, row.api, row.status_code) == ("fake", "messages", 200)


async def test_the_websocket_chat_reaches_anthropic(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=30, completion_tokens=7)
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1", model=MODEL))
        messages = await until_end(ws, "c1")
    assert text_of(messages, "c1") == REPLY and messages[-1]["type"] == "done"
    (seen,) = gateway.upstream.requests_to("/v1/messages")
    assert seen.body["stream"] is True and seen.body["max_tokens"] == 4096
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.provider_name, row.prompt_tokens, row.completion_tokens) == ("ws", "claude", 30, 7)
