"""Per-request cost through the real proxy: JSON, streamed, client-aborted and WebSocket requests.

The seeded gateway prices gpt-4o-mini at 0.15/0.60 and gpt-3.5-turbo at
0.50/1.50 USD per 1M tokens; the fake upstream reports 17 prompt tokens and
one completion token per streamed word (7 for its default reply).
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import pytest
import requests
from sqlalchemy import update
from sqlalchemy.orm import Session
from websockets.asyncio.client import connect

from proxy_app.exchange.pricing import request_cost
from shared.db import bump_config_version
from shared.models import ProviderModel
from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import Scenario
from tests.support.raw_client import stream_until

pytestmark = pytest.mark.db

MESSAGES = [{"role": "user", "content": "What does this cost?"}]
MINI = (Decimal("0.15"), Decimal("0.60"))
TURBO = (Decimal("0.50"), Decimal("1.50"))
TIMEOUT_S = 10.0


def post(gw: Gateway, **body: object) -> requests.Response:
    return requests.post(
        gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=TIMEOUT_S,
        json={"model": "gpt-4o-mini", "messages": MESSAGES, **body},
    )


def test_json_request_cost_in_header_and_row(gateway: Gateway) -> None:
    r = post(gateway, model="gpt-3.5-turbo")
    assert r.status_code == 200
    expected = request_cost(17, 7, *TURBO)
    assert expected == Decimal("0.000019")
    assert r.headers["X-Request-Cost"] == str(expected.normalize())
    (row,) = gateway.wait_rows(1)
    assert row.cost_usd == expected and (row.prompt_tokens, row.completion_tokens) == (17, 7)


def test_streamed_requests_are_never_free(gateway: Gateway) -> None:
    r = post(gateway, stream=True)
    assert r.status_code == 200 and b"[DONE]" in r.content
    # Without upstream usage the proxy counts tokens itself, and bills them just the same.
    gateway.upstream.default = Scenario(report_usage=False)
    r = post(gateway, stream=True, model="gpt-3.5-turbo")
    assert r.status_code == 200 and b"[DONE]" in r.content
    reported, estimated = gateway.wait_rows(2)
    assert reported.stream and reported.token_source == "upstream"
    assert reported.cost_usd == request_cost(17, 7, *MINI) == Decimal("0.00000675")
    assert estimated.stream and estimated.token_source == "estimated"
    assert estimated.prompt_tokens > 0 and estimated.completion_tokens > 0
    assert estimated.cost_usd == request_cost(estimated.prompt_tokens, estimated.completion_tokens, *TURBO) > 0


def test_client_aborted_stream_is_billed_for_what_was_delivered(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(
        reply="alpha beta gamma delta epsilon zeta eta theta", chunk_delay_s=0.3, report_usage=False
    )
    stream_until(gateway.url, gateway.key, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}, b"alpha")
    (row,) = gateway.wait_rows(1)
    assert row.status_code == 499 and row.stream
    assert row.completion_tokens >= 1
    assert row.cost_usd == request_cost(row.prompt_tokens, row.completion_tokens, *MINI) > 0


async def test_websocket_usage_message_carries_the_recorded_cost(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://", 1) + "/ws/chat"
    async with connect(url, additional_headers=gateway.headers(), open_timeout=TIMEOUT_S) as ws:
        await ws.send(json.dumps({"type": "chat", "id": "t1", "model": "gpt-3.5-turbo", "messages": MESSAGES}))
        messages = []
        async with asyncio.timeout(TIMEOUT_S):
            while not messages or messages[-1]["type"] not in ("done", "error"):
                messages.append(json.loads(await ws.recv()))
    (usage,) = [m for m in messages if m["type"] == "usage"]
    (row,) = await asyncio.to_thread(gateway.wait_rows, 1)
    assert row.transport == "ws"
    assert row.cost_usd == request_cost(17, 7, *TURBO) > 0
    assert usage["cost_usd"] == float(row.cost_usd)


def test_price_changes_do_not_rewrite_recorded_costs(gateway: Gateway) -> None:
    assert post(gateway).status_code == 200
    (first,) = gateway.wait_rows(1)
    with Session(gateway.engine) as s, s.begin():
        s.execute(
            update(ProviderModel).where(ProviderModel.model_name == "gpt-4o-mini")
            .values(input_price=Decimal("1"), output_price=Decimal("2"))
        )
        bump_config_version(s)
    new_cost = request_cost(17, 7, Decimal("1"), Decimal("2"))
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # the proxy picks the change up within its poll interval
        r = post(gateway)
        if r.headers["X-Request-Cost"] == str(new_cost.normalize()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.headers["X-Request-Cost"] == str(new_cost.normalize())
    rows = gateway.wait_rows(2)
    assert rows[0].request_id == first.request_id and rows[0].cost_usd == request_cost(17, 7, *MINI)
    assert rows[-1].cost_usd == new_cost


@pytest.mark.parametrize("stream", [False, True])
def test_cached_prompt_tokens_are_priced_at_the_cached_input_price(gateway: Gateway, stream: bool) -> None:
    with Session(gateway.engine) as s, s.begin():
        s.execute(update(ProviderModel).where(ProviderModel.model_name == "gpt-4o-mini")
                  .values(cached_input_price=Decimal("0.075")))
        bump_config_version(s)
    time.sleep(1.2)  # the next snapshot has the price
    gateway.upstream.default = Scenario(prompt_tokens=1000, completion_tokens=50, cached_tokens=800,
                                        reasoning_tokens=20)
    r = post(gateway, stream=stream)
    assert r.status_code == 200
    r.content  # noqa: B018 - read to the end
    (row,) = gateway.wait_rows(1)
    assert (row.prompt_tokens, row.cached_tokens, row.completion_tokens, row.reasoning_tokens) == (1000, 800, 50, 20)
    # 200 uncached at 0.15, 800 cached at 0.075, 50 out at 0.60 (USD per 1M tokens).
    expected = (200 * Decimal("0.15") + 800 * Decimal("0.075") + 50 * Decimal("0.60")) / 1_000_000
    assert row.cost_usd == expected
    assert request_cost(1000, 50, *MINI, cached_tokens=800, cached_price=Decimal("0.075")) == expected
    assert request_cost(1000, 50, *MINI, cached_tokens=800) == request_cost(1000, 50, *MINI)  # no cached price
