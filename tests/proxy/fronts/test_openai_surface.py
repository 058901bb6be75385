"""Embeddings, legacy completions, model retrieval and CORS, through the official openai SDK.

The seeded gateway prices gpt-4o-mini at 0.15/0.60 and gpt-3.5-turbo at 0.50/1.50 USD
per 1M tokens; the fake upstream answers each API as OpenAI's reference describes it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest
import requests

from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_key, add_model

pytestmark = pytest.mark.db

ORIGIN = "https://app.example.com"


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=10)
    yield sdk
    sdk.close()


def _cost(tokens_in: int, tokens_out: int, prices: tuple[str, str]) -> Decimal:
    return (tokens_in * Decimal(prices[0]) + tokens_out * Decimal(prices[1])) / 1_000_000


# --- embeddings --------------------------------------------------------------------------------


def test_embeddings_pass_through_and_are_metered(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=11)
    # The SDK asks for base64 by default and decodes it: the vectors arrive as sent.
    reply = client.embeddings.create(model="gpt-4o-mini", input=["first text", "second text"], dimensions=4)
    assert [len(d.embedding) for d in reply.data] == [4, 4]
    assert reply.data[1].embedding[0] == pytest.approx(0.002)
    assert reply.usage.prompt_tokens == 11
    (seen,) = gateway.upstream.requests_to("/v1/embeddings")
    assert seen.body["model"] == "gpt-4o-mini" and seen.body["dimensions"] == 4
    assert seen.body["encoding_format"] == "base64" and seen.headers["Authorization"].endswith("abcdefgh")
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.stream, row.status_code, row.prompt_tokens, row.completion_tokens) == (
        "embeddings", False, 200, 11, 0)
    assert row.token_source == "upstream" and row.cost_usd == _cost(11, 0, ("0.15", "0.60"))


@pytest.mark.parametrize("given", ["one string", [1, 2, 3, 4], [[5, 6], [7]]])
def test_embeddings_take_strings_and_token_arrays(gateway: Gateway, client: openai.OpenAI, given: object) -> None:
    reply = client.embeddings.create(model="gpt-4o-mini", input=given, encoding_format="float")  # type: ignore[arg-type]
    assert reply.data and isinstance(reply.data[0].embedding[0], float)
    raw = requests.post(gateway.url + "/v1/embeddings", headers=gateway.headers(), timeout=10,
                        json={"model": "gpt-4o-mini", "input": given, "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert struct.unpack(f"<{len(packed) // 4}f", packed)[0] == pytest.approx(0.001)


def test_embeddings_without_upstream_usage_are_counted(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(report_usage=False)
    client.embeddings.create(model="gpt-4o-mini", input="count these five words please", encoding_format="float")
    (row,) = gateway.wait_rows(1)
    assert (row.token_source, row.completion_tokens) == ("estimated", 0)
    assert 4 <= row.prompt_tokens <= 8


@pytest.mark.parametrize("body", [
    {"model": "gpt-4o-mini"},
    {"model": "gpt-4o-mini", "input": ""},
    {"model": "gpt-4o-mini", "input": []},
    {"model": "gpt-4o-mini", "input": ["ok", 3]},
    {"model": "gpt-4o-mini", "input": "x", "encoding_format": "int8"},
    {"model": "gpt-4o-mini", "input": "x", "dimensions": 0},
    {"model": "gpt-4o-mini", "input": "x", "stream": True},
])
def test_bad_embeddings_bodies_are_400_and_reach_nobody(gateway: Gateway, body: dict) -> None:
    r = requests.post(gateway.url + "/v1/embeddings", headers=gateway.headers(), json=body, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert r.headers["X-Request-Id"].startswith("req_")
    assert gateway.upstream.requests_to("/v1/embeddings") == [] and gateway.flushed_rows() == []


def test_embeddings_reserve_only_their_input(gateway: Gateway) -> None:
    # While a request runs it holds a reservation against the key's tokens per minute: a chat
    # request its prompt plus the default completion, an embedding its input alone.
    limited = "nx-embed-limited-key-0123456789abcdefghij"
    add_key(gateway.engine, limited, name="embed", tpm=100)
    gateway.wait_config()
    r = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(limited), timeout=10,
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-tokens"] == "0"
    gateway.upstream.default = Scenario(prompt_tokens=1)
    r = requests.post(gateway.url + "/v1/embeddings", headers=gateway.headers(limited), timeout=10,
                      json={"model": "gpt-4o-mini", "input": "hello"})
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "100"
    # What the chat request used (24 tokens) is in the window; the embedding holds its 1 input token.
    assert int(r.headers["x-ratelimit-remaining-tokens"]) == 100 - 24 - 1


# --- legacy completions -------------------------------------------------------------------------


def test_completions_json_and_stream(gateway: Gateway, client: openai.OpenAI) -> None:
    reply = client.completions.create(model="gpt-3.5-turbo", prompt="Say hello", max_tokens=20)
    assert reply.choices[0].text == "Hello from the fake upstream, my friend."
    stream = client.completions.create(model="gpt-3.5-turbo", prompt="Say hello", stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the fake upstream, my friend."
    assert all(c.usage is None for c in chunks)  # the usage chunk the gateway asked for is not the client's
    first, second = gateway.upstream.requests_to("/v1/completions")
    assert "stream_options" not in first.body and second.body["stream_options"] == {"include_usage": True}
    rows = gateway.wait_rows(2)
    assert [(r.api, r.stream, r.prompt_tokens, r.completion_tokens, r.token_source) for r in rows] == [
        ("completions", False, 17, 7, "upstream"), ("completions", True, 17, 7, "upstream")]
    assert rows[1].cost_usd == _cost(17, 7, ("0.50", "1.50"))


def test_a_completion_stream_without_usage_is_estimated_from_its_text(gateway: Gateway, client: openai.OpenAI) -> None:
    gateway.upstream.default = Scenario(report_usage=False)
    list(client.completions.create(model="gpt-3.5-turbo", prompt="Say hello", stream=True))
    (row,) = gateway.wait_rows(1)
    assert row.token_source == "estimated" and row.completion_tokens >= 7 and row.prompt_tokens >= 2


def test_a_bad_completions_body_is_400(gateway: Gateway) -> None:
    r = requests.post(gateway.url + "/v1/completions", headers=gateway.headers(), timeout=10,
                      json={"model": "gpt-3.5-turbo", "prompt": {"not": "a prompt"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


# --- models ----------------------------------------------------------------------------------------


def test_models_retrieve_answers_for_the_keys_models_only(gateway: Gateway, client: openai.OpenAI) -> None:
    model = client.models.retrieve("gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "fake")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    scoped = "nx-scoped-models-key-0123456789abcdefghij"
    add_key(gateway.engine, scoped, name="scoped", models=["gpt-3.5-turbo"])
    gateway.wait_config()
    r = requests.get(gateway.url + "/v1/models/gpt-4o-mini", headers=gateway.headers(scoped), timeout=10)
    assert r.status_code == 404  # outside its scope, as if it did not exist
    listed = requests.get(gateway.url + "/v1/models", headers=gateway.headers(), timeout=10)
    assert listed.status_code == 200 and listed.headers["X-Request-Id"].startswith("req_")
    add_model(gateway.engine, gateway.provider_id, "org/model-with-slash")
    gateway.wait_config()
    assert client.models.retrieve("org/model-with-slash").id == "org/model-with-slash"


def test_every_answer_has_a_request_id_and_models_get_an_access_line(
    gateway: Gateway, caplog: pytest.LogCaptureFixture,
) -> None:
    for path in ("/health", "/v1/models", "/v1/nowhere"):
        r = requests.get(gateway.url + path, headers=gateway.headers(), timeout=10)
        assert r.headers["X-Request-Id"].startswith("req_"), path
    with caplog.at_level("INFO", logger="nexusai.proxy.access"):
        r = requests.get(gateway.url + "/v1/models/gpt-4o-mini", headers=gateway.headers(), timeout=10)
    line = next(rec.getMessage() for rec in caplog.records if r.headers["X-Request-Id"] in rec.getMessage())
    assert "GET /v1/models/gpt-4o-mini" in line and "status=200" in line and gateway.key not in line


# --- CORS --------------------------------------------------------------------------------------------


@pytest.fixture
def cors_gateway(make_gateway) -> Gateway:  # type: ignore[no-untyped-def]
    return make_gateway(cors_origins=(ORIGIN,))


def test_a_preflight_needs_no_key_and_names_what_is_allowed(cors_gateway: Gateway) -> None:
    r = requests.options(cors_gateway.url + "/v1/chat/completions", timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"] == "authorization, content-type, x-stainless-os"
    refused = requests.options(cors_gateway.url + "/v1/chat/completions", timeout=10, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in refused.headers


@pytest.mark.parametrize("stream", [False, True])
def test_answers_to_an_allowed_origin_expose_our_headers(cors_gateway: Gateway, stream: bool) -> None:
    r = requests.post(cors_gateway.url + "/v1/chat/completions", timeout=10,
                      headers={**cors_gateway.headers(), "Origin": ORIGIN},
                      json={"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN and "Origin" in r.headers["Vary"]
    assert "X-Request-Id" in r.headers["Access-Control-Expose-Headers"]
    other = requests.get(cors_gateway.url + "/v1/models", timeout=10,
                         headers={**cors_gateway.headers(), "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    bad_key = requests.get(cors_gateway.url + "/v1/models", timeout=10, headers={"Origin": ORIGIN})
    assert bad_key.status_code == 401 and bad_key.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_without_cors_origins_nothing_is_added(gateway: Gateway) -> None:
    r = requests.options(gateway.url + "/v1/chat/completions", timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 401 and "Access-Control-Allow-Origin" not in r.headers


async def test_a_websocket_from_another_origin_is_refused(cors_gateway: Gateway,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    caplog.set_level(logging.INFO, logger="nexusai.proxy.access")
    url = cors_gateway.url.replace("http://", "ws://") + "/ws/chat"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin="https://evil.example",  # type: ignore[arg-type]
                           additional_headers=cors_gateway.headers()):
            pass
    assert refused.value.response.status_code == 403
    assert refused.value.response.headers["X-Request-Id"].startswith("req_")
    async with connect(url, origin=ORIGIN, additional_headers=cors_gateway.headers()) as ws:  # type: ignore[arg-type]
        await ws.send('{"type": "ping"}')
        assert "pong" in str(await ws.recv())
    # The 101 names the socket, and its access line says so when it closes.
    assert ws.response is not None
    session_id = ws.response.headers["X-Request-Id"]
    assert session_id.startswith("req_")
    for _ in range(50):  # bounded: the line is written as the server's side of the socket ends
        lines = [r.getMessage() for r in caplog.records if r.name == "nexusai.proxy.access"]
        if any(line.startswith(f"{session_id} ws /ws/chat status=101 chats=0 close=1000") for line in lines):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"no access line for {session_id}: {lines}")
