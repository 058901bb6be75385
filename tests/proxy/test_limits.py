"""Key governance: rpm, tpm, concurrency, token quota and budget, under concurrency."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import aiohttp
import pytest
import requests

from proxy_app.app_keys import STATE
from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

MESSAGES = [{"role": "user", "content": "limits"}]


@pytest.fixture(params=["memory", "redis"])
def make_gateway(request: pytest.FixtureRequest, make_gateway):  # type: ignore[no-untyped-def]
    """Every test here twice: limits in this process's memory, and shared through a real Redis."""
    if request.param == "memory":
        return make_gateway
    server = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")

    def build(seed: bool = True, **overrides: object) -> Gateway:
        return make_gateway(seed, redis_url=server.url, redis_key_prefix=prefix, **overrides)
    return build


class Clock:
    """A settable wall clock for the limiter."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def limited(make_gateway, engine, raw: str = "nx-limited-key-000000000000000", **limits) -> tuple[Gateway, Clock]:  # type: ignore[no-untyped-def]
    gw = make_gateway()
    add_key(engine, raw, **limits)
    gw.key = raw
    clock = Clock()
    gw.proxy.app[STATE].limiter.clock = clock
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if requests.get(gw.url + "/v1/models", headers=gw.headers(), timeout=5).status_code == 200:
            break
        time.sleep(0.05)
    return gw, clock


async def fire(gw: Gateway, n: int, body: dict | None = None) -> list[tuple[int, dict[str, str], bytes]]:
    body = body or {"model": "gpt-4o-mini", "messages": MESSAGES}
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> tuple[int, dict[str, str], bytes]:
            async with session.post(gw.url + "/v1/chat/completions", json=body, headers=gw.headers()) as r:
                return r.status, dict(r.headers), await r.read()
        return await asyncio.gather(*(one() for _ in range(n)))


def post(gw: Gateway, **extra: object) -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                         json={"model": "gpt-4o-mini", "messages": MESSAGES, **extra})


async def test_rpm_exact_under_a_burst_and_window_slides(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw, clock = limited(make_gateway, engine, rpm=10)
    results = await fire(gw, 30)
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(ok) == 10 and len(refused) == 20
    for _, headers, body in refused:
        assert int(headers["Retry-After"]) >= 1
        assert b"rate_limit_exceeded" in body and b"10 requests per minute" in body
    assert len(gw.upstream.chat_requests()) == 10  # refusals never reach the upstream
    assert len(gw.wait_rows(10)) == 10  # and are not billed
    clock.now += 30
    assert post(gw).status_code == 429  # still inside the sliding minute
    clock.now += 31
    assert post(gw).status_code == 200


async def test_concurrency_cap_holds_with_slow_upstream(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw, _ = limited(make_gateway, engine, max_concurrency=2)
    gw.upstream.default = Scenario(delay_s=0.5)
    results = await fire(gw, 10)
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200] + [429] * 8
    assert gw.upstream.max_in_flight <= 2
    assert all(b"concurrency_limit_exceeded" in r[2] for r in results if r[0] == 429)
    assert post(gw).status_code == 200  # slots are given back


async def test_token_quota_holds_under_concurrency_and_survives_restart(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw, _ = limited(make_gateway, engine, token_quota=1000)
    gw.upstream.default = Scenario(delay_s=0.2, completion_tokens=200)  # 217 tokens a request
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 300}
    reservation = 300 + gw.proxy.app[STATE].tokens.count_messages(MESSAGES, "gpt-4o-mini")
    for _ in range(4):  # waves of 50 concurrent requests until the quota is spent
        await fire(gw, 50, body)
    rows = gw.flushed_rows()
    used = sum(r.total_tokens for r in rows if r.status_code == 200)
    assert 1000 <= used <= 1000 + reservation
    assert post(gw, max_tokens=300).json()["error"]["code"] == "insufficient_quota"
    gw.proxy.stop()
    again = make_gateway(seed=False)
    again.key = gw.key
    r = post(again, max_tokens=5)
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert "1000 tokens" in r.json()["error"]["message"]


def test_tpm_cuts_at_the_figure_and_recovers_without_lockout(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw, clock = limited(make_gateway, engine, tpm=100)
    passed = 0
    for _ in range(10):
        r = post(gw, max_tokens=10)
        if r.status_code != 200:
            assert r.status_code == 429 and "100 tokens per minute" in r.json()["error"]["message"]
            assert int(r.headers["Retry-After"]) >= 1
            break
        passed += 1
        clock.now += 1
    # 24 tokens a request: the cut-off comes once 100 is reached, within one request.
    assert passed == 5
    clock.now += 55.5  # t=60.5: the first request (t=0) has left the window, the one at t=1 not
    assert post(gw, max_tokens=10).status_code == 200
    assert post(gw, max_tokens=10).status_code == 429
    clock.now += 61  # everything has left the window: no lock-out beyond it
    assert all(post(gw, max_tokens=10).status_code == 200 for _ in range(4))


@pytest.mark.parametrize("stream", [False, True])
def test_budget_stops_spending(make_gateway, engine, stream: bool) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway()
    pid = add_provider(engine, "pricey", gw.upstream.base_url)
    add_model(engine, pid, "pricey-model", input_price="10", output_price="30")  # 0.00038 USD a request
    add_key(engine, "nx-budget-key-0000000000000000", budget_usd=Decimal("0.001"))
    gw.key = "nx-budget-key-0000000000000000"
    time.sleep(0.6)
    statuses = []
    for _ in range(6):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "pricey-model", "messages": MESSAGES, "max_tokens": 10, "stream": stream})
        r.content  # noqa: B018
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "insufficient_quota"
    assert statuses == [200, 200, 200, 429, 429, 429]
    rows = gw.wait_rows(3)
    spent = sum((r.cost_usd for r in rows), Decimal(0))
    assert spent == Decimal("0.00114") and all(r.stream is stream for r in rows)


def test_limit_headers_count_down(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw, clock = limited(make_gateway, engine, rpm=5, tpm=1000)
    remaining = []
    for _ in range(5):
        r = post(gw, max_tokens=10)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "5" and r.headers["X-RateLimit-Limit"] == "5"
        assert r.headers["x-ratelimit-limit-tokens"] == "1000"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
        remaining.append((int(r.headers["x-ratelimit-remaining-requests"]), int(r.headers["X-RateLimit-Remaining"]),
                          int(r.headers["x-ratelimit-remaining-tokens"])))
        clock.now += 1
    assert [x[0] for x in remaining] == [4, 3, 2, 1, 0]
    assert [x[1] for x in remaining] == [4, 3, 2, 1, 0]
    tokens_left = [x[2] for x in remaining]
    assert tokens_left == sorted(tokens_left, reverse=True) and tokens_left[-1] < tokens_left[0]
    # Streams carry them too.
    clock.now += 61
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), stream=True, timeout=10,
                      json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "max_tokens": 10})
    assert r.headers["x-ratelimit-remaining-requests"] == "4"
    r.close()


def test_unlimited_key_gets_no_limit_headers(gateway: Gateway) -> None:
    r = post(gateway)
    assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers


async def test_websocket_chats_and_http_requests_share_the_concurrency_cap(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    from tests.proxy.test_ws_chat import chat, open_ws, send, until_delta, until_end

    gw, _ = limited(make_gateway, engine, max_concurrency=1)
    gw.upstream.default = Scenario(first_chunk_pause_s=1.0)
    async with open_ws(gw.url, gw.headers()) as ws:
        await send(ws, chat("c1"))
        await until_delta(ws, "c1")  # the socket's chat holds the one slot
        results = await fire(gw, 1)
        assert results[0][0] == 429 and b"concurrency_limit_exceeded" in results[0][2]
        await send(ws, chat("c2"))
        refused = [m for m in await until_end(ws, "c2") if m["id"] == "c2"]
        assert refused[-1]["type"] == "error" and refused[-1]["error"]["code"] == "concurrency_limit_exceeded"
        await until_end(ws, "c1")
    results = await fire(gw, 1)
    assert results[0][0] == 200  # the slot came back when the chat ended
