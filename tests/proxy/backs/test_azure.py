"""The `azure` provider kind against a fake written from Azure OpenAI's data-plane reference.

Provider `azure` (kind `azure`, the resource endpoint as its URL) serves `gpt-4o` from the
deployment `prod-gpt4o` at 2.50 / 10 USD per 1M tokens and `embed` from `prod-embed`.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
import requests
from sqlalchemy import text

from tests.proxy.conftest import Gateway
from tests.support.fake_azure import FakeAzure, content_filter_error
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_model, add_provider

pytestmark = pytest.mark.db

MODEL, DEPLOYMENT = "gpt-4o", "prod-gpt4o"
SERVER_KEY = "azure-upstream-secret-0005-abcdef"
REPLY = "Hello from the fake upstream, my friend."


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    fake = FakeAzure().start()
    yield fake
    fake.stop()


def _register(gw: Gateway, url: str, api_version: str | None = None) -> int:
    provider = add_provider(gw.engine, "azure", url, server_key=SERVER_KEY, kind="azure", api_version=api_version)
    add_model(gw.engine, provider, MODEL, upstream_name=DEPLOYMENT, input_price="2.50", output_price="10")
    add_model(gw.engine, provider, "embed", upstream_name="prod-embed", input_price="0.02")
    add_model(gw.engine, provider, "instruct", upstream_name="prod-instruct", input_price="1.5", output_price="2")
    gw.wait_config()
    return provider


@pytest.fixture
def gateway(make_gateway: Any, azure: FakeAzure) -> Gateway:
    gw: Gateway = make_gateway()
    _register(gw, azure.endpoint)
    return gw


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=10)
    yield sdk
    sdk.close()


def test_chat_goes_to_the_deployment_with_api_key_and_version(
    gateway: Gateway, azure: FakeAzure, client: openai.OpenAI
) -> None:
    azure.default = Scenario(prompt_tokens=100, cached_tokens=40, completion_tokens=7)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello"}])
    assert reply.choices[0].message.content == REPLY
    assert reply.model_extra is not None and "prompt_filter_results" in reply.model_extra  # Azure's, passed on
    (call,) = azure.calls
    assert (call.path, call.query, call.api_key) == (
        f"/openai/deployments/{DEPLOYMENT}/chat/completions", {"api-version": "2024-10-21"}, SERVER_KEY)
    (seen,) = azure.requests
    assert "Authorization" not in seen.headers
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.provider_name, row.model, row.prompt_tokens, row.cached_tokens, row.completion_tokens) == (
        "chat", "azure", MODEL, 100, 40, 7)
    assert row.cost_usd == (60 * Decimal("2.50") + 40 * Decimal("2.50") + 7 * Decimal(10)) / 1_000_000


def test_stream_with_azures_prompt_filter_chunk(gateway: Gateway, azure: FakeAzure, client: openai.OpenAI) -> None:
    azure.default = Scenario(prompt_tokens=30, completion_tokens=8)
    chunks = list(client.chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "Say hello"}]))
    assert chunks[0].choices == []  # Azure's prompt_filter_results chunk comes first
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    (row,) = gateway.wait_rows(1)
    assert (row.stream, row.prompt_tokens, row.completion_tokens) == (True, 30, 8)


def test_embeddings_completions_and_responses(gateway: Gateway, azure: FakeAzure, client: openai.OpenAI) -> None:
    vectors = client.embeddings.create(model="embed", input=["a", "b"], dimensions=3)
    assert len(vectors.data) == 2 and len(vectors.data[1].embedding) == 3
    text = client.completions.create(model="instruct", prompt="Say hello")
    assert text.choices[0].text == REPLY
    response = client.responses.create(model=MODEL, input="Say hello")
    assert response.output_text == REPLY
    assert [(c.path, c.query) for c in azure.calls] == [
        ("/openai/deployments/prod-embed/embeddings", {"api-version": "2024-10-21"}),
        ("/openai/deployments/prod-instruct/completions", {"api-version": "2024-10-21"}),
        ("/openai/responses", {"api-version": "2025-04-01-preview"}),  # not per deployment: model names it
    ]
    assert azure.requests[-1].body["model"] == DEPLOYMENT
    rows = gateway.wait_rows(3)
    assert [(r.api, r.status_code) for r in rows] == [("embeddings", 200), ("completions", 200), ("responses", 200)]


def test_the_v1_surface_and_a_pinned_api_version(make_gateway: Any, azure: FakeAzure) -> None:
    gw: Gateway = make_gateway()
    _register(gw, azure.v1_url)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0, timeout=10) as sdk:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        with gw.engine.begin() as conn:
            conn.execute(text("UPDATE provider SET api_version = 'preview', server_url = :u WHERE name = 'azure'"),
                         {"u": azure.v1_url})
            conn.exec_driver_sql("UPDATE config_version SET version = version + 1")
        gw.wait_config()
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        with gw.engine.begin() as conn:
            conn.execute(text("UPDATE provider SET api_version = '2025-03-01-preview', server_url = :u "
                              "WHERE name = 'azure'"), {"u": azure.endpoint + "/openai"})
            conn.exec_driver_sql("UPDATE config_version SET version = version + 1")
        gw.wait_config()
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert [(c.path, c.query) for c in azure.calls] == [
        ("/openai/v1/chat/completions", {}),
        ("/openai/v1/chat/completions", {"api-version": "preview"}),
        (f"/openai/deployments/{DEPLOYMENT}/chat/completions", {"api-version": "2025-03-01-preview"}),
    ]
    assert [r.body["model"] for r in azure.requests] == [DEPLOYMENT] * 3


def test_content_filters_give_a_clear_error_or_finish(gateway: Gateway, azure: FakeAzure,
                                                       client: openai.OpenAI) -> None:
    azure.default = Scenario(status=400, error_body=content_filter_error("violence"))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    error: Any = refused.value.body
    assert error["code"] == "content_filter" and error["type"] == "content_filter"
    assert error["message"].startswith("Azure's content filter refused the prompt (violence).")
    azure.default = Scenario(finish_reason="content_filter")
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].finish_reason == "content_filter"
    rows = gateway.wait_rows(2)
    assert [r.status_code for r in rows] == [400, 200]


def test_messages_clients_reach_azure_through_chat(gateway: Gateway, azure: FakeAzure) -> None:
    azure.default = Scenario(prompt_tokens=12, completion_tokens=8)
    with anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=10) as claude:
        reply = claude.messages.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    assert reply.content[0].text == REPLY  # type: ignore[union-attr]
    assert azure.calls[0].path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    (row,) = gateway.wait_rows(1)
    assert (row.api, row.provider_name, row.prompt_tokens, row.completion_tokens) == ("messages", "azure", 12, 8)


def test_a_wrong_key_is_the_upstreams_401_without_the_key(gateway: Gateway, azure: FakeAzure) -> None:
    with gateway.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE provider SET server_key = '' WHERE name = 'azure'")
        conn.exec_driver_sql("UPDATE config_version SET version = version + 1")
    gateway.wait_config()
    r = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(), timeout=10,
                      json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401 and "invalid subscription key" in r.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_tools_pass_through(gateway: Gateway, azure: FakeAzure, client: openai.OpenAI, stream: bool) -> None:
    azure.default = Scenario(reply="", tool_calls=[("get_weather", '{"city": "Paris"}')], prompt_tokens=20,
                             completion_tokens=5)
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    kwargs: Any = {"model": MODEL, "tools": [tool], "messages": [{"role": "user", "content": "Weather?"}]}
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        parts = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        arguments = "".join(p.function.arguments or "" for p in parts)  # type: ignore[union-attr]
        name = parts[0].function.name  # type: ignore[union-attr]
    else:
        (call,) = client.chat.completions.create(**kwargs).choices[0].message.tool_calls or []
        arguments, name = call.function.arguments, call.function.name  # type: ignore[union-attr]
    assert (name, arguments) == ("get_weather", '{"city": "Paris"}')
    assert azure.requests[0].body["tools"] == [tool]
    (row,) = gateway.wait_rows(1)
    assert (row.prompt_tokens, row.completion_tokens) == (20, 5)
