"""Anthropic's Messages API through the official `anthropic` SDK, translated to an OpenAI-compatible upstream.

The seeded provider `fake` is of kind `openai`: a Messages request for gpt-4o-mini goes out
as a chat completion, and the reply comes back as an Anthropic message or its events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest
import requests

from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import Scenario

pytestmark = pytest.mark.db

REPLY = "Hello from the fake upstream, my friend."
WEATHER = {"name": "get_weather", "description": "Weather of a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def claude(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=10)
    yield sdk
    sdk.close()


def _cost(tokens_in: int, tokens_out: int) -> Decimal:
    return (tokens_in * Decimal("0.15") + tokens_out * Decimal("0.60")) / 1_000_000


def test_translated_message(gateway: Gateway, claude: anthropic.Anthropic) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=30, completion_tokens=7, cached_tokens=10)
    reply = claude.messages.create(
        model="gpt-4o-mini", max_tokens=64, system="Be brief.", stop_sequences=["END"],
        extra_body={"temperature": 0.3},
        messages=[{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hi?"},
                  {"role": "user", "content": [{"type": "text", "text": "Again"},
                                               {"type": "image", "source": {"type": "base64", "media_type":
                                                                            "image/png", "data": "iVBORw0KGgo="}}]}],
        metadata={"user_id": "u-42"},
    )
    assert reply.type == "message" and reply.role == "assistant" and reply.model == "gpt-4o-mini"
    assert [b.type for b in reply.content] == ["text"] and reply.content[0].text == REPLY  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn"
    assert (reply.usage.input_tokens, reply.usage.cache_read_input_tokens, reply.usage.output_tokens) == (20, 10, 7)
    (seen,) = gateway.upstream.chat_requests()
    assert seen.body == {
        "model": "gpt-4o-mini", "max_tokens": 64, "temperature": 0.3, "stop": ["END"], "user": "u-42",
        "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Hi?"},
            {"role": "user", "content": [
                {"type": "text", "text": "Again"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        ],
    }
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.stream, row.status_code, row.prompt_tokens, row.cached_tokens) == (
        "messages", False, 200, 30, 10)
    assert row.cost_usd == _cost(30, 7)


def test_translated_stream_through_the_sdk(gateway: Gateway, claude: anthropic.Anthropic) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=12, completion_tokens=8, reasoning="Think.")
    with claude.messages.stream(model="gpt-4o-mini", max_tokens=64,
                                messages=[{"role": "user", "content": "Say hello"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "message_delta" in kinds
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[1].text == REPLY and final.content[0].thinking == "Think. "  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 8
    (seen,) = gateway.upstream.chat_requests()
    assert seen.body["stream"] is True and seen.body["stream_options"] == {"include_usage": True}
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.stream, row.prompt_tokens, row.completion_tokens) == ("messages", True, 12, 8)


def test_tool_use_both_ways(gateway: Gateway, claude: anthropic.Anthropic) -> None:
    gateway.upstream.default = Scenario(reply="", tool_calls=[("get_weather", '{"city": "Paris"}')])
    with claude.messages.stream(model="gpt-4o-mini", max_tokens=64, tools=[WEATHER],  # type: ignore[list-item]
                                tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    (use,) = final.content
    assert use.type == "tool_use" and (use.id, use.name, use.input) == ("call_fake_0", "get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
    reply = claude.messages.create(model="gpt-4o-mini", max_tokens=64, tools=[WEATHER],  # type: ignore[list-item]
                                   messages=[{"role": "user", "content": "Weather in Paris?"},
                                             {"role": "assistant", "content": [use.model_dump()]},
                                             {"role": "user", "content": [
                                                 {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"},
                                                 {"type": "text", "text": "Thanks"}]}])
    assert reply.content[0].type == "tool_use" and reply.content[0].input == {"city": "Paris"}  # type: ignore[union-attr]
    first, second = gateway.upstream.chat_requests()
    assert first.body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city.", "parameters": WEATHER["input_schema"]}}]
    assert (first.body["tool_choice"], first.body["parallel_tool_calls"]) == ("required", False)
    assert second.body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_fake_0", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_fake_0", "content": "Sunny"},
        {"role": "user", "content": "Thanks"}]


def test_errors_are_in_anthropics_shape(gateway: Gateway, claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="gpt-4o-mini", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert "max_tokens" in bad.value.body["error"]["message"]  # type: ignore[index]
    wrong = anthropic.Anthropic(base_url=gateway.url, api_key="nx-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    wrong.close()
    r = requests.post(gateway.url + "/v1/messages", data=b"{not json", timeout=10,
                      headers={"x-api-key": gateway.key, "content-type": "application/json"})
    body = r.json()
    assert r.status_code == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["request_id"] == r.headers["X-Request-Id"]
    gateway.upstream.default = Scenario(status=529, error_body={"error": {"message": "busy", "type": "x"}})
    with pytest.raises(anthropic.APIStatusError) as busy:
        claude.messages.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert busy.value.status_code == 529 and busy.value.body["error"] == {  # type: ignore[index]
        "type": "overloaded_error", "message": "busy"}
    assert [r.status_code for r in gateway.wait_rows(1)] == [529]


def test_mid_stream_failure_is_an_error_event(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(break_after_chunks=2)
    r = requests.post(gateway.url + "/v1/messages", timeout=10, headers={"x-api-key": gateway.key},
                      json={"model": "gpt-4o-mini", "max_tokens": 20, "stream": True,
                            "messages": [{"role": "user", "content": "x"}]})
    events = [json.loads(block.split("data: ", 1)[1]) for block in r.text.strip().split("\n\n")]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "api_error"
    (row,) = gateway.wait_rows(1)
    assert row.status_code == 502 and row.api == "messages"


def test_count_tokens_models_and_the_probe(gateway: Gateway, claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="gpt-4o-mini", system="Be brief.",
                                           messages=[{"role": "user", "content": "Say hello"}])
    assert 8 < counted.input_tokens < 30
    plain = claude.messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}])
    with_tools = claude.messages.count_tokens(model="gpt-4o-mini", tools=[WEATHER],  # type: ignore[list-item]
                                              messages=[{"role": "user", "content": "Say hello"}])
    assert counted.input_tokens > plain.input_tokens  # the system prompt counts
    assert with_tools.input_tokens >= plain.input_tokens + 20  # and so do the tools' definitions
    models = claude.models.list()
    assert {m.id for m in models.data} == {"gpt-4o-mini", "gpt-3.5-turbo"} and models.data[0].type == "model"
    assert claude.models.retrieve("gpt-4o-mini").display_name == "gpt-4o-mini"
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("no-such-model")
    assert requests.head(gateway.url + "/", timeout=10).status_code == 200
    openai_shape = requests.get(gateway.url + "/v1/models", headers=gateway.headers(), timeout=10).json()
    assert openai_shape["object"] == "list"
    assert gateway.upstream.requests == [] and gateway.flushed_rows() == []


@pytest.mark.parametrize("body", [
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},  # no max_tokens
    {"model": "gpt-4o-mini", "max_tokens": 5, "messages": []},
    {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
    {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]},
    {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": 1},
    {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
    {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "data": "x"}}]}]},
    {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
     "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
])
def test_bad_or_untranslatable_bodies_are_400(gateway: Gateway, body: dict[str, Any]) -> None:
    r = requests.post(gateway.url + "/v1/messages", headers={"x-api-key": gateway.key}, json=body, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    assert gateway.upstream.requests == [] and gateway.flushed_rows() == []


def test_claude_codes_own_request_shape(gateway: Gateway) -> None:
    # What Claude Code 2.1 sends (captured; shortened): a `system` turn among the messages, text
    # blocks with cache marks, adaptive thinking, output and context settings chat has no words for.
    body = {
        "model": "gpt-4o-mini", "max_tokens": 32000, "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                                                  {"type": "text", "text": "say hi",
                                                   "cache_control": {"type": "ephemeral"}}]},
                     {"role": "system", "content": "Today is Tuesday."}],
        "tools": [{"name": "Bash", "description": "Run a command.", "input_schema": {
            "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}],
        "metadata": {"user_id": '{"device_id":"d1","session_id":"s1"}'},
        "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }
    r = requests.post(gateway.url + "/v1/messages", json=body, timeout=10,
                      headers={"x-api-key": gateway.key, "anthropic-version": "2023-06-01",
                               "anthropic-beta": "claude-code-20250219"})
    assert r.status_code == 200 and r.text.rstrip().endswith('data: {"type":"message_stop"}')
    (seen,) = gateway.upstream.chat_requests()
    assert seen.body["messages"] == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "<system-reminder>ctx</system-reminder>\nsay hi"},
        {"role": "system", "content": "Today is Tuesday."}]
    assert {"thinking", "output_config", "context_management", "metadata"}.isdisjoint(seen.body)
    assert seen.body["user"] == '{"device_id":"d1","session_id":"s1"}' and seen.body["max_tokens"] == 32000
