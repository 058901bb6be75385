"""Circuit breakers: the state machine on a clock of the test's, then live through the proxy.

Live: a provider that accepts connections and never answers (priority 10, `timeout_s` 1)
in front of a healthy one; a provider answering 429 with Retry-After.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
import requests

from proxy_app.app_keys import STATE
from proxy_app.config import ProviderCfg, Route
from proxy_app.governance.breaker import CLOSED, HALF_OPEN, OPEN, Breakers, retry_after_seconds
from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.seed import add_key, add_model, add_provider

MESSAGES = [{"role": "user", "content": "hi"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _route(provider_id: int, model: str = "m") -> Route:
    provider = ProviderCfg(id=provider_id, name=f"p{provider_id}", base_url="http://127.0.0.1:9", server_key="k",
                           http_proxy=None, timeout_s=1.0, priority=0, weight=1)
    return Route(provider=provider, model_id=provider_id, model_name=model, upstream_name=model,
                 input_price=Decimal(0), output_price=Decimal(0), created=0)


def _fail(breakers: Breakers, route: Route, provider_wide: bool = True, **kw: Any) -> None:
    claimed = breakers.begin(route)
    breakers.failed(route, "boom", kind="timeout", provider_wide=provider_wide, **kw)
    breakers.end(route, claimed)


def test_opens_after_consecutive_failures_then_half_opens_for_one_probe() -> None:
    clock = Clock()
    breakers = Breakers(failures=3, cooldown_s=10, retry_after_max_s=300, clock=clock)
    a, b = _route(1), _route(2)
    for _ in range(2):
        _fail(breakers, a)
    assert breakers.usable([a, b]) == [a, b]
    breakers.succeeded(a, 5.0)  # a success resets the count
    for _ in range(3):
        _fail(breakers, a)
    assert breakers.report()[1]["state"] == OPEN
    assert breakers.usable([a, b]) == [b]
    clock.now += 10
    assert breakers.report()[1]["state"] == HALF_OPEN
    assert breakers.usable([a, b]) == [a, b]
    probe = breakers.begin(a)  # the probe goes out: nobody else may use a meanwhile
    assert breakers.usable([a, b]) == [b]
    breakers.failed(a, "still down", kind="timeout", provider_wide=True)
    breakers.end(a, probe)
    assert breakers.report()[1]["state"] == OPEN and breakers.usable([a, b]) == [b]  # a failed probe reopens
    clock.now += 10
    probe = breakers.begin(a)
    breakers.succeeded(a, 5.0)
    breakers.end(a, probe)
    assert breakers.report()[1]["state"] == CLOSED and breakers.usable([a, b]) == [a, b]


def test_a_cancelled_probe_is_given_back() -> None:
    clock = Clock()
    breakers = Breakers(failures=1, cooldown_s=5, retry_after_max_s=300, clock=clock)
    a, b = _route(1), _route(2)
    _fail(breakers, a)
    clock.now += 5
    probe = breakers.begin(a)
    assert breakers.usable([a, b]) == [b]
    breakers.end(a, probe)  # neither success nor failure: the client went away
    assert breakers.usable([a, b]) == [a, b]


def test_model_errors_open_the_model_circuit_only() -> None:
    clock = Clock()
    breakers = Breakers(failures=2, cooldown_s=10, retry_after_max_s=300, clock=clock)
    a_m, a_n = _route(1, "m"), _route(1, "n")
    for _ in range(2):
        _fail(breakers, a_m, provider_wide=False)
    assert breakers.usable([a_m]) == [a_m]  # alone and open: tried anyway
    assert breakers.usable([a_m, _route(2, "m")]) == [_route(2, "m")]
    assert breakers.usable([a_n]) == [a_n]
    report = breakers.report()[1]
    assert report["state"] == CLOSED and report["models"] == {"m": OPEN}


def test_when_every_candidate_is_open_the_least_recently_failed_is_tried() -> None:
    clock = Clock()
    breakers = Breakers(failures=1, cooldown_s=60, retry_after_max_s=300, clock=clock)
    a, b, c = _route(1), _route(2), _route(3)
    _fail(breakers, b)
    clock.now += 1
    _fail(breakers, a)
    clock.now += 1
    _fail(breakers, c)
    assert breakers.usable([a, b, c]) == [b]


def test_retry_after_cools_down_for_that_long_capped() -> None:
    clock = Clock()
    breakers = Breakers(failures=0, cooldown_s=10, retry_after_max_s=30, clock=clock)
    a, b = _route(1), _route(2)
    _fail(breakers, a, provider_wide=False, retry_after_s=20)
    assert breakers.usable([a, b]) == [b]
    clock.now += 19.9
    assert breakers.usable([a, b]) == [b]
    clock.now += 0.1
    assert breakers.usable([a, b]) == [a, b]
    _fail(breakers, a, provider_wide=False, retry_after_s=3600)
    clock.now += 30
    assert breakers.usable([a, b]) == [a, b]
    _fail(breakers, b)  # failures=0: plain failures never open a circuit
    assert breakers.usable([b]) == [b] and breakers.report()[2]["state"] == CLOSED


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    for bad in (None, "", "0", "-3", "soon", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"):
        assert retry_after_seconds(bad) is None


def test_report_figures() -> None:
    clock = Clock()
    breakers = Breakers(failures=5, cooldown_s=10, retry_after_max_s=300, clock=clock)
    a = _route(1)
    for latency in (10.0, 30.0, 20.0):
        claimed = breakers.begin(a)
        breakers.succeeded(a, latency)
        breakers.end(a, claimed)
    _fail(breakers, a)
    report = breakers.report()[1]
    assert (report["requests"], report["errors"], report["latencies_ms"], report["last_error"]) \
        == (4, 1, [10.0, 20.0, 30.0], "boom")
    assert breakers.rank_latency(a) == pytest.approx(10 + 0.2 * 20 + 0.2 * (20 - 14) * 1)  # 10 -> 14 -> 15.2
    clock.now += 301
    assert breakers.report()[1]["requests"] == 0  # only the last five minutes count


# --- live, through the proxy --------------------------------------------------------------------


def _post(gw: Gateway, stream: bool = False) -> tuple[requests.Response, float]:
    began = time.monotonic()
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=20,
                      json={"model": "shared-model", "messages": MESSAGES, "stream": stream})
    return r, time.monotonic() - began


@pytest.mark.db
def test_a_black_holed_provider_is_skipped_then_recovers_through_a_probe(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    hole = FakeUpstream(default=Scenario(delay_s=30)).start()
    try:
        gw = make_gateway(seed=False, breaker_failures=2, breaker_cooldown_s=2.0)
        primary = add_provider(engine, "primary", hole.base_url, priority=10, timeout_s=1)
        secondary = add_provider(engine, "secondary", upstream.base_url, priority=0)
        add_model(engine, primary, "shared-model")
        add_model(engine, secondary, "shared-model")
        add_key(engine, gw.key)
        gw.wait_config()
        slow = [_post(gw) for _ in range(2)]
        assert all(r.status_code == 200 and 1.0 <= took < 3 for r, took in slow)  # timed out, then failed over
        fast = [_post(gw, stream=bool(i % 2)) for i in range(6)]
        assert all(r.status_code == 200 and took < 0.9 for r, took in fast), [t for _, t in fast]
        assert len(hole.chat_requests()) == 2  # the open circuit keeps requests away from it
        breakers = gw.proxy.app[STATE].breakers
        assert breakers.report()[primary]["state"] == OPEN

        hole.default = Scenario(reply="Healed.")
        time.sleep(2.1)
        r, _ = _post(gw)  # the half-open probe: served by the primary again
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Healed."
        assert breakers.report()[primary]["state"] == CLOSED
        rows = gw.wait_rows(9)
        assert [x.provider_name for x in rows] == ["secondary"] * 8 + ["primary"]
    finally:
        hole.stop()


@pytest.mark.db
def test_429_retry_after_cools_the_provider_down(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    limited = FakeUpstream(default=Scenario(status=429, error_headers={"Retry-After": "2"})).start()
    try:
        gw = make_gateway(seed=False)
        primary = add_provider(engine, "primary", limited.base_url, priority=10)
        secondary = add_provider(engine, "secondary", upstream.base_url, priority=0)
        add_model(engine, primary, "shared-model")
        add_model(engine, secondary, "shared-model")
        add_key(engine, gw.key)
        gw.wait_config()
        assert _post(gw)[0].status_code == 200
        limited.default = Scenario(reply="Back.")
        for _ in range(3):
            assert _post(gw)[0].json()["choices"][0]["message"]["content"] != "Back."
        assert len(limited.chat_requests()) == 1  # cooling down: not asked again
        time.sleep(2.1)
        assert _post(gw)[0].json()["choices"][0]["message"]["content"] == "Back."
        assert len(limited.chat_requests()) == 2
    finally:
        limited.stop()


@pytest.mark.db
def test_least_latency_prefers_the_faster_of_equal_priorities(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    slow = FakeUpstream(default=Scenario(delay_s=0.3, reply="Slow.")).start()
    try:
        gw = make_gateway(seed=False, routing_strategy="least_latency")
        for name, url in (("slow", slow.base_url), ("fast", upstream.base_url)):
            add_model(engine, add_provider(engine, name, url, priority=5), "shared-model")
        add_key(engine, gw.key)
        gw.wait_config()
        # Unknown providers rank first: both are tried once, then the faster keeps the traffic.
        replies = [_post(gw)[0].json()["choices"][0]["message"]["content"] for _ in range(8)]
        assert replies.count("Slow.") == 1
        assert len(slow.chat_requests()) == 1
    finally:
        slow.stop()


def test_least_busy_ranks_by_attempts_in_flight() -> None:
    breakers = Breakers(failures=5, cooldown_s=10, retry_after_max_s=300)
    a, b = _route(1), _route(2)
    first = breakers.begin(a)
    assert (breakers.rank_busy(a), breakers.rank_busy(b)) == (1, 0)
    breakers.end(a, first)
    assert breakers.rank_busy(a) == 0
