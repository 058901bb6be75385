"""Claude clients and prompt caching through run.py, down to the admin's reports.

One fake upstream plays two providers: `claude` (kind `anthropic`, Anthropic's /v1/messages)
and `vllm` (OpenAI-compatible, chat only). A Claude client reaches both, as Claude Code does
(its probe, its model listing, its streamed beta calls with `cache_control` marks); an
OpenAI client reaches Claude through the chat translation. Every cached, cache-write and
reasoning token must come out of the reports and the export exactly, priced at the model's
input, output, cache-read and cache-write prices.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
import requests

from tests.e2e.test_codex_flow import _exported
from tests.e2e.test_proxy_sdk import wait_until_served
from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.nexus_process import NexusProcess

pytestmark = pytest.mark.db

CLAUDE = "claude-sonnet-4-5"
QWEN = "qwen3-coder"
SYSTEM = [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
           "cache_control": {"type": "ephemeral"}}]


@pytest.fixture
def setup(nexus_factory: Any, upstream: FakeUpstream) -> tuple[NexusProcess, str, int]:
    nx: NexusProcess = nexus_factory(env={"CONFIG_POLL_INTERVAL": "0.5"})
    claude = nx.admin("POST", "/providers", json={"name": "claude", "kind": "anthropic",
                                                  "server_url": upstream.base_url.removesuffix("/v1"),
                                                  "server_key": "sk-ant-secret-0042"})
    vllm = nx.admin("POST", "/providers", json={"name": "vllm", "server_url": upstream.base_url,
                                                "server_key": "sk-vllm-secret-4242", "apis": ["chat"]})
    assert claude.status_code == 201 and vllm.status_code == 201, (claude.text, vllm.text)
    for provider, model, prices in ((claude, CLAUDE, (3, 15, 0.30, 3.75)), (vllm, QWEN, (0.2, 0.8, 0.05, None))):
        r = nx.admin("POST", "/provider_models", json={
            "provider_id": provider.json()["id"], "model_name": model, "input_price": prices[0],
            "output_price": prices[1], "cached_input_price": prices[2], "cache_write_price": prices[3]})
        assert r.status_code == 201, r.text
    created = nx.admin("POST", "/keys", json={"name": "claude-code"}).json()
    wait_until_served(nx, created["key"], CLAUDE)
    wait_until_served(nx, created["key"], QWEN)
    return nx, created["key"], created["id"]


def _per_million(*terms: tuple[int, str]) -> Decimal:
    return sum((tokens * Decimal(price) for tokens, price in terms), Decimal(0)) / 1_000_000


def test_cache_tokens_reach_every_report(setup: tuple[NexusProcess, str, int], upstream: FakeUpstream) -> None:
    nx, key, key_id = setup
    probe = requests.head(nx.proxy_url + "/", headers={"x-api-key": key}, timeout=5)
    assert probe.status_code == 200
    claude = anthropic.Anthropic(base_url=nx.proxy_url, api_key=key, max_retries=0, timeout=10)
    gpt = openai.OpenAI(base_url=nx.proxy_url + "/v1", api_key=key, max_retries=0, timeout=10)
    try:
        assert {m.id for m in claude.models.list()} >= {CLAUDE, QWEN}

        # 1. Claude Code's own call shape to the Anthropic provider: passed through, cache read and write.
        upstream.default = Scenario(prompt_tokens=1000, cached_tokens=600, cache_write_tokens=300,
                                    completion_tokens=7)
        with claude.beta.messages.stream(
            model=CLAUDE, max_tokens=32000, system=SYSTEM,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "say hi"}], metadata={"user_id": "user_abc"},
            betas=["claude-code-20250219", "prompt-caching-2024-07-31"],
        ) as stream:
            first = stream.get_final_message()
        assert (first.usage.input_tokens, first.usage.cache_read_input_tokens,
                first.usage.cache_creation_input_tokens, first.usage.output_tokens) == (100, 600, 300, 7)

        # 2. The same client to the chat-only model: translated, OpenAI's cached and reasoning tokens.
        upstream.default = Scenario(prompt_tokens=500, cached_tokens=200, completion_tokens=10, reasoning_tokens=4)
        with claude.beta.messages.stream(model=QWEN, max_tokens=1024, system=SYSTEM,  # type: ignore[arg-type]
                                         messages=[{"role": "user", "content": "say hi"}]) as stream:
            second = stream.get_final_message()
        assert (second.usage.input_tokens, second.usage.cache_read_input_tokens, second.usage.output_tokens) \
            == (300, 200, 10)

        # 3. An OpenAI client to Claude: translated to Messages, cache reads as prompt_tokens_details.
        upstream.default = Scenario(prompt_tokens=2000, cached_tokens=1500, completion_tokens=20)
        third = gpt.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}])
        assert third.usage is not None and third.usage.prompt_tokens_details is not None
        assert (third.usage.prompt_tokens, third.usage.prompt_tokens_details.cached_tokens) == (2000, 1500)
    finally:
        claude.close()
        gpt.close()

    costs = [
        _per_million((100, "3"), (600, "0.30"), (300, "3.75"), (7, "15")),
        _per_million((300, "0.2"), (200, "0.05"), (10, "0.8")),
        _per_million((500, "3"), (1500, "0.30"), (20, "15")),
    ]
    rows = _exported(nx, 3)
    assert [(r["api"], r["provider_name"], r["model"], r["prompt_tokens"], r["cached_tokens"],
             r["cache_write_tokens"], r["completion_tokens"], r["reasoning_tokens"]) for r in rows] == [
        ("messages", "claude", CLAUDE, 1000, 600, 300, 7, 0),
        ("messages", "vllm", QWEN, 500, 200, 0, 10, 4),
        ("chat", "claude", CLAUDE, 2000, 1500, 0, 20, 0),
    ]
    assert [Decimal(r["cost_usd"]) for r in rows] == costs
    total_cost = f"{sum(costs, Decimal(0)):.12f}"

    total = nx.admin("GET", "/stats/total").json()
    assert (total["prompt_tokens"], total["cached_tokens"], total["cache_write_tokens"],
            total["completion_tokens"], total["reasoning_tokens"]) == (3500, 2300, 300, 37, 4)
    assert total["cost_usd_exact"] == total_cost
    assert {api: (f["cached_tokens"], f["cache_write_tokens"]) for api, f in total["by_api"].items()} \
        == {"messages": (800, 300), "chat": (1500, 0)}
    assert total["by_provider"]["claude"]["cached_tokens"] == 2100

    monthly = nx.admin("GET", "/usage").json()
    assert (monthly["cached_tokens"], monthly["cache_write_tokens"], monthly["cost_usd_exact"]) \
        == (2300, 300, total_cost)
    (today,) = [d for d in monthly["daily_breakdown"] if d["requests"]]
    assert (today["cached_tokens"], today["cache_write_tokens"], today["reasoning_tokens"]) == (2300, 300, 4)

    per_key = nx.admin("GET", f"/keys/{key_id}/usage").json()
    assert (per_key["total_cached_tokens"], per_key["total_cache_write_tokens"],
            per_key["total_reasoning_tokens"]) == (2300, 300, 4)
    assert per_key["model_usage"][CLAUDE]["cached_tokens"] == 2100
    assert per_key["api_usage"]["messages"]["cache_write_tokens"] == 300
