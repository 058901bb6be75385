"""Failover across providers serving the same model."""

from __future__ import annotations

import time

import pytest
import requests

from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

MESSAGES = [{"role": "user", "content": "hi"}]


def _two_providers(make_gateway, engine, first_url: str, second: FakeUpstream) -> Gateway:  # type: ignore[no-untyped-def]
    gw = make_gateway(seed=False)
    a = add_provider(engine, "primary", first_url, priority=10)
    b = add_provider(engine, "secondary", second.base_url, priority=0)
    add_model(engine, a, "shared-model")
    add_model(engine, b, "shared-model")
    add_key(engine, gw.key)
    time.sleep(0.6)
    return gw


@pytest.mark.parametrize("stream", [False, True])
def test_first_provider_down_every_request_succeeds_through_second(make_gateway, engine, upstream, stream) -> None:  # type: ignore[no-untyped-def]
    gw = _two_providers(make_gateway, engine, "http://127.0.0.1:9/v1", upstream)
    for _ in range(10):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": MESSAGES, "stream": stream})
        assert r.status_code == 200
        assert "Hello" in r.text
    rows = gw.wait_rows(10)
    assert len(rows) == 10 and {r.provider_name for r in rows} == {"secondary"}
    assert len(upstream.chat_requests()) == 10  # exactly one upstream request per client request


def test_5xx_and_429_fail_over_but_4xx_does_not(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    failing = FakeUpstream(default=Scenario(status=503)).start()
    try:
        gw = _two_providers(make_gateway, engine, failing.base_url, upstream)
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": MESSAGES})
        assert r.status_code == 200
        failing.default = Scenario(status=429)
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": MESSAGES})
        assert r.status_code == 200
        failing.default = Scenario(status=400)
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": MESSAGES})
        assert r.status_code == 400  # a client error is the client's, not a reason to retry elsewhere
        assert len(failing.chat_requests()) == 3 and len(upstream.chat_requests()) == 2
        rows = gw.wait_rows(3)
        assert [(x.provider_name, x.status_code) for x in rows] == [
            ("secondary", 200), ("secondary", 200), ("primary", 400),
        ]
    finally:
        failing.stop()


def test_all_candidates_failing_returns_last_answer(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.default = Scenario(status=500)
    gw = _two_providers(make_gateway, engine, "http://127.0.0.1:9/v1", upstream)
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                      json={"model": "shared-model", "messages": MESSAGES})
    assert r.status_code == 500
    (row,) = gw.wait_rows(1)
    assert row.status_code == 500 and row.provider_name == "secondary"


def test_a_failure_is_recorded_against_the_last_provider_tried(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(seed=False)
    first = add_provider(engine, "first-dead", "http://127.0.0.1:9/v1", priority=10)
    last = add_provider(engine, "last-dead", "http://127.0.0.1:9/v2", priority=0)
    add_model(engine, first, "shared-model")
    add_model(engine, last, "shared-model")
    add_key(engine, gw.key)
    time.sleep(0.6)
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                      json={"model": "shared-model", "messages": MESSAGES})
    assert r.status_code == 502
    (row,) = gw.wait_rows(1)
    assert (row.provider_name, row.status_code, row.error_type) == ("last-dead", 502, "upstream_unreachable")
