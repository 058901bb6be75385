"""The `gemini` provider kind against a fake written from Google's Gemini API reference.

Provider `google` (kind `gemini`, its URL the server root as Google documents it) serves
gemini-2.5-flash at 0.30 / 2.50 USD per 1M tokens, 0.075 for cached input, and
text-embedding-004. Every client API reaches it by translation.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
import requests

from tests.proxy.conftest import Gateway
from tests.proxy.test_ws_chat import chat, open_ws, send, text_of, until_end
from tests.support.fake_gemini import FakeGemini
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_model, add_provider

pytestmark = pytest.mark.db

MODEL = "gemini-2.5-flash"
EMBEDDER = "text-embedding-004"
SERVER_KEY = "AIza-gemini-upstream-secret-0004"
REPLY = "Hello from the fake upstream, my friend."
WEATHER_FN = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture
def gateway(make_gateway: Any, gemini: FakeGemini) -> Gateway:
    gw: Gateway = make_gateway()
    google = add_provider(gw.engine, "google", gemini.base_url, server_key=SERVER_KEY, kind="gemini")
    add_model(gw.engine, google, MODEL, input_price="0.30", output_price="2.50", cached_input_price=Decimal("0.075"))
    add_model(gw.engine, google, EMBEDDER, input_price="0.10")
    gw.wait_config()
    return gw


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=10)
    yield sdk
    sdk.close()


@pytest.fixture
def claude(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=10)
    yield sdk
    sdk.close()


def _cost(uncached: int, cached: int, output: int) -> Decimal:
    return (uncached * Decimal("0.30") + cached * Decimal("0.075") + output * Decimal("2.50")) / 1_000_000


def test_chat_is_generate_content_with_usage_metadata_priced(
    gateway: Gateway, gemini: FakeGemini, client: openai.OpenAI
) -> None:
    gemini.default = Scenario(prompt_tokens=1000, cached_tokens=400, completion_tokens=7, reasoning_tokens=30,
                              reasoning="Thinking it over.")
    reply = client.chat.completions.create(
        model=MODEL, temperature=0.4, top_p=0.9, max_tokens=64, stop=["END"], seed=7,
        response_format={"type": "json_object"},
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [
                      {"type": "text", "text": "What is in these?"},
                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                      {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}}]},
                  {"role": "assistant", "content": "A cat."},
                  {"role": "user", "content": "And?"}],
    )
    assert reply.choices[0].message.content == REPLY and reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.reasoning_content == "Thinking it over."  # type: ignore[attr-defined]
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (1000, 37, 1037)
    (seen,) = gemini.requests
    assert seen.path == f"/v1beta/models/{MODEL}:generateContent"
    assert seen.headers["x-goog-api-key"] == SERVER_KEY and "Authorization" not in seen.headers
    assert seen.body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "What is in these?"},
                                       {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                                       {"fileData": {"mimeType": "image/jpeg",
                                                     "fileUri": "https://example.test/cat.jpg"}}]},
            {"role": "model", "parts": [{"text": "A cat."}]},
            {"role": "user", "parts": [{"text": "And?"}]}],
        "generationConfig": {"temperature": 0.4, "topP": 0.9, "seed": 7, "maxOutputTokens": 64,
                             "stopSequences": ["END"], "responseMimeType": "application/json"},
    }
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.provider_name, row.prompt_tokens, row.cached_tokens, row.completion_tokens,
            row.reasoning_tokens, row.token_source) == ("chat", "google", 1000, 400, 37, 30, "upstream")
    assert row.cost_usd == _cost(600, 400, 37)


def test_chat_stream_arrives_as_chunks_with_usage(gateway: Gateway, gemini: FakeGemini, client: openai.OpenAI) -> None:
    gemini.default = Scenario(prompt_tokens=50, completion_tokens=8)
    stream = client.chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Say hello"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) \
        == (50, 8)
    (seen,) = gemini.requests
    assert seen.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    (row,) = gateway.wait_rows(1)
    assert (row.stream, row.status_code, row.prompt_tokens, row.completion_tokens, row.cost_usd) == (
        True, 200, 50, 8, _cost(50, 0, 8))


@pytest.mark.parametrize("stream", [False, True])
def test_tools_are_function_declarations_and_calls(
    gateway: Gateway, gemini: FakeGemini, client: openai.OpenAI, stream: bool
) -> None:
    gemini.default = Scenario(reply="", prompt_tokens=60, completion_tokens=12,
                              tool_calls=[("get_weather", '{"city": "Paris"}')])
    messages: Any = [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_old", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_old", "content": '{"sky": "rainy"}'},
        {"role": "user", "content": "And Paris?"}]
    kwargs: Any = {"model": MODEL, "messages": messages, "tools": [WEATHER_FN],
                   "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        assert [(c.index, c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
            (0, "call_0", "get_weather", '{"city":"Paris"}')]
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(**kwargs)
        (call,) = reply.choices[0].message.tool_calls or []
        assert (call.id, call.function.name, json.loads(call.function.arguments)) == (  # type: ignore[union-attr]
            "call_0", "get_weather", {"city": "Paris"})
        finishes = [reply.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    (seen,) = gemini.requests
    assert seen.body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather of a city.",
        "parametersJsonSchema": WEATHER_FN["function"]["parameters"]}]}]  # type: ignore[index]
    assert seen.body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY",
                                                                 "allowedFunctionNames": ["get_weather"]}}
    assert seen.body["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "rainy"}}},
                                   {"text": "And Paris?"}]}]
    (row,) = gateway.wait_rows(1)
    assert (row.prompt_tokens, row.completion_tokens) == (60, 12)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("block", ["prompt", "answer"])
def test_safety_blocks_finish_with_content_filter(
    gateway: Gateway, gemini: FakeGemini, client: openai.OpenAI, block: str, stream: bool
) -> None:
    gemini.default = Scenario(safety_block=block, prompt_tokens=9)
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, stream=True,
                                                     messages=[{"role": "user", "content": "x"}]))
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        finishes, content = [reply.choices[0].finish_reason], reply.choices[0].message.content or ""
        if block == "prompt":
            assert "blockReason SAFETY" in (reply.choices[0].message.refusal or "")
    assert finishes == ["content_filter"] and content == ""
    (row,) = gateway.wait_rows(1)
    assert (row.status_code, row.prompt_tokens, row.completion_tokens) == (200, 9, 0)


def test_embeddings_one_and_many_in_float_and_base64(
    gateway: Gateway, gemini: FakeGemini, client: openai.OpenAI
) -> None:
    one = client.embeddings.create(model=EMBEDDER, input="hello world", dimensions=4)  # the SDK asks for base64
    assert [round(v, 6) for v in one.data[0].embedding] == [0.001, 0.002, 0.003, 0.004]
    many = requests.post(gateway.url + "/v1/embeddings", headers=gateway.headers(), timeout=10,
                         json={"model": EMBEDDER, "input": ["a", "b"], "encoding_format": "float"}).json()
    assert [d["index"] for d in many["data"]] == [0, 1] and many["data"][1]["embedding"][0] == 0.002
    assert many["object"] == "list" and many["model"] == EMBEDDER
    raw = requests.post(gateway.url + "/v1/embeddings", headers=gateway.headers(), timeout=10,
                        json={"model": EMBEDDER, "input": "x", "encoding_format": "base64", "dimensions": 2}).json()
    assert struct.unpack("<2f", base64.b64decode(raw["data"][0]["embedding"])) == pytest.approx((0.001, 0.002))
    paths = [r.path for r in gemini.requests]
    assert paths == [f"/v1beta/models/{EMBEDDER}:embedContent", f"/v1beta/models/{EMBEDDER}:batchEmbedContents",
                     f"/v1beta/models/{EMBEDDER}:embedContent"]
    assert gemini.requests[0].body == {"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 4}
    assert gemini.requests[1].body == {"requests": [
        {"model": f"models/{EMBEDDER}", "content": {"parts": [{"text": t}]}} for t in ("a", "b")]}
    rows = gateway.wait_rows(3)
    # Gemini's embedding replies carry no token counts: the rows say theirs are counted here.
    assert [(r.api, r.status_code, r.token_source) for r in rows] == [("embeddings", 200, "estimated")] * 3
    assert rows[0].prompt_tokens == 2 and rows[0].cost_usd == Decimal(2) * Decimal("0.10") / 1_000_000
    tokens = requests.post(gateway.url + "/v1/embeddings", headers=gateway.headers(), timeout=10,
                           json={"model": EMBEDDER, "input": [1, 2, 3]})
    assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "input"


def test_messages_clients_reach_gemini_through_chat(
    gateway: Gateway, gemini: FakeGemini, claude: anthropic.Anthropic
) -> None:
    gemini.default = Scenario(prompt_tokens=21, completion_tokens=8)
    reply = claude.messages.create(model=MODEL, max_tokens=20, system="Be brief.",
                                   messages=[{"role": "user", "content": "Say hello"}])
    assert reply.content[0].text == REPLY and reply.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (21, 8)
    with claude.messages.stream(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "Hi"}]) as s:
        assert s.get_final_message().content[0].text == REPLY  # type: ignore[union-attr]
    assert gemini.requests[0].body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert gemini.requests[0].body["generationConfig"] == {"maxOutputTokens": 20}
    rows = gateway.wait_rows(2)
    assert [(r.api, r.provider_name, r.prompt_tokens, r.stream) for r in rows] == [
        ("messages", "google", 21, False), ("messages", "google", 21, True)]


def test_responses_reach_gemini_through_chat(gateway: Gateway, gemini: FakeGemini, client: openai.OpenAI) -> None:
    reply = client.responses.create(model=MODEL, input="Say hello", instructions="Be brief.")
    assert reply.output_text == REPLY
    assert gemini.requests[0].body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


def test_errors_in_openais_shape_and_failover_to_another_kind(
    gateway: Gateway, gemini: FakeGemini, client: openai.OpenAI
) -> None:
    gemini.default = Scenario(status=400)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert bad.value.body == {"message": "fake failure 400", "type": "upstream_error", "param": None,  # type: ignore[comparison-overlap]
                              "code": "INVALID_ARGUMENT"}
    assert SERVER_KEY not in json.dumps(bad.value.body)
    # Down (503): the same model on the OpenAI-compatible provider answers.
    add_model(gateway.engine, gateway.provider_id, MODEL, upstream_name="gemini-via-openai")
    with gateway.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE provider SET priority = 10 WHERE name = 'google'")
    gateway.wait_config()
    gemini.default = Scenario(status=503)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == REPLY
    assert [r.path for r in gateway.upstream.requests] == ["/v1/chat/completions"]
    rows = gateway.wait_rows(2)
    assert [(r.provider_name, r.status_code) for r in rows] == [("google", 400), ("fake", 200)]
    models = requests.get(gateway.url + "/v1/models", headers=gateway.headers(), timeout=10).json()
    assert {MODEL, EMBEDDER} <= {m["id"] for m in models["data"]}


def test_a_mid_stream_error_event_ends_the_exchange(gateway: Gateway, gemini: FakeGemini) -> None:
    gemini.default = Scenario(error_after_chunks=2)
    r = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(), timeout=10,
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]})
    last = json.loads(r.text.strip().split("\n\n")[-1].removeprefix("data: "))
    assert last["error"]["code"] == "UNAVAILABLE"
    (row,) = gateway.wait_rows(1)
    assert row.status_code == 502


async def test_the_websocket_chat_reaches_gemini(gateway: Gateway, gemini: FakeGemini) -> None:
    gemini.default = Scenario(prompt_tokens=30, completion_tokens=7)
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1", model=MODEL))
        messages = await until_end(ws, "c1")
    assert text_of(messages, "c1") == REPLY and messages[-1]["type"] == "done"
    (seen,) = gemini.requests
    assert seen.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.provider_name, row.prompt_tokens, row.completion_tokens) == ("ws", "google", 30, 7)
