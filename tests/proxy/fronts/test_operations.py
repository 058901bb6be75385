"""`GET /metrics` scraped and parsed with prometheus_client's own parser, and `GET /health/ready`."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
import requests
from sqlalchemy import text

from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.prometheus_text import samples
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

MESSAGES = [{"role": "user", "content": "hi"}]


def scrape(gw: Gateway, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and sorted labels."""
    r = requests.get(gw.url + "/metrics", headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    return samples(r.text)


def _chat(gw: Gateway, model: str = "gpt-4o-mini", stream: bool = False) -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                         json={"model": model, "messages": MESSAGES, "stream": stream})


def test_counters_match_the_requests_sent(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    gw.upstream.default = Scenario(prompt_tokens=20, completion_tokens=5, cached_tokens=4)
    for stream in (False, True, False):
        assert _chat(gw, stream=stream).status_code == 200
    assert _chat(gw, model="no-such-model").status_code == 404  # refused before routing
    gw.upstream.default = Scenario(status=500)
    assert _chat(gw).status_code == 500  # the only candidate's answer, passed on
    rows = gw.wait_rows(4)
    samples = scrape(gw)

    def get(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    where = {"api": "chat", "model": "gpt-4o-mini", "provider": "fake"}
    assert get("nexusai_requests_total", **where, status="200") == 3
    assert get("nexusai_requests_total", **where, status="500") == 1
    assert get("nexusai_request_duration_seconds_count", **where) == 4
    assert get("nexusai_request_duration_seconds_bucket", **where, le="+Inf") == 4
    cumulative = [v for (name, labels), v in samples.items()
                  if name == "nexusai_request_duration_seconds_bucket" and ("status", "200") not in labels]
    assert cumulative == sorted(cumulative) and len(cumulative) == 16  # 15 bounds and +Inf, never decreasing
    assert get("nexusai_request_duration_seconds_sum", **where) == pytest.approx(
        sum(r.latency_ms for r in rows) / 1000, abs=1e-3)
    assert get("nexusai_time_to_first_token_seconds_count", **where) == 4
    assert get("nexusai_tokens_total", **where, kind="prompt") == sum(r.prompt_tokens for r in rows)
    assert get("nexusai_tokens_total", **where, kind="completion") == sum(r.completion_tokens for r in rows)
    assert get("nexusai_tokens_total", **where, kind="cached") == 12
    assert get("nexusai_cost_usd_total", **where) == pytest.approx(float(sum((r.cost_usd for r in rows),
                                                                             Decimal(0))))
    assert get("nexusai_refusals_total", api="chat", reason="model_not_found") == 1
    assert get("nexusai_upstream_attempts_total", provider="fake", result="ok") == 3
    assert get("nexusai_upstream_attempts_total", provider="fake", result="status_500") == 1
    assert get("nexusai_requests_in_flight") == 0
    assert get("nexusai_circuit_state", provider="fake", model="") == 0
    assert get("nexusai_usage_backlog_rows") == 0
    assert 0 <= get("nexusai_config_age_seconds") < 5
    assert ("process_cpu_seconds_total", ()) in samples  # the process collector of a lone proxy


def test_failovers_and_open_circuits_are_counted(make_gateway: Any, engine: Any, upstream: FakeUpstream) -> None:
    gw: Gateway = make_gateway(seed=False, breaker_failures=1)
    primary = add_provider(engine, "primary", "http://127.0.0.1:9/v1", priority=10)
    secondary = add_provider(engine, "secondary", upstream.base_url)
    add_model(engine, primary, "shared-model")
    add_model(engine, secondary, "shared-model")
    add_key(engine, gw.key)
    gw.wait_config()
    assert _chat(gw, model="shared-model").status_code == 200
    samples = scrape(gw)
    assert samples[("nexusai_failovers_total", (("api", "chat"), ("model", "shared-model")))] == 1
    assert samples[("nexusai_upstream_attempts_total", (("provider", "primary"), ("result", "unreachable")))] == 1
    assert samples[("nexusai_circuit_state", (("model", ""), ("provider", "primary")))] == 2  # open


def test_metrics_take_the_admin_token(make_gateway: Any) -> None:
    gw: Gateway = make_gateway(admin_token="operator-secret-token")
    assert requests.get(gw.url + "/metrics", timeout=5).status_code == 401
    r = requests.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {gw.key}"}, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_token"  # a client key is not enough
    assert "nexusai_requests_in_flight" in str(scrape(gw, Authorization="Bearer operator-secret-token"))


def test_metrics_can_be_turned_off(make_gateway: Any) -> None:
    gw: Gateway = make_gateway(metrics_enabled=False)
    assert requests.get(gw.url + "/metrics", timeout=5).status_code == 404
    assert _chat(gw).status_code == 200


def test_ready_when_fresh_and_writing(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    r = requests.get(gw.url + "/health/ready", timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready" and r.json()["usage_backlog_rows"] == 0


def test_not_ready_when_the_config_snapshot_is_stale(make_gateway: Any) -> None:
    gw: Gateway = make_gateway(config_poll_interval_s=30.0, config_stale_after_s=0.3)
    time.sleep(0.5)
    r = requests.get(gw.url + "/health/ready", timeout=5)
    assert r.status_code == 503
    (reason,) = r.json()["reasons"]
    assert "config snapshot is" in reason and "CONFIG_STALE_AFTER_S=0.3" in reason
    gw.wait_config()
    assert requests.get(gw.url + "/health/ready", timeout=5).status_code == 200


def test_not_ready_while_usage_rows_cannot_reach_the_database(make_gateway: Any, engine: Any) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("a missing table is an outage on SQLite only (PostgreSQL refuses the rows instead)")
    gw: Gateway = make_gateway()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE usage_record RENAME TO usage_record_away"))
    try:
        assert _chat(gw).status_code == 200  # still served: the row waits in the journal
        deadline = time.monotonic() + 5
        while True:
            r = requests.get(gw.url + "/health/ready", timeout=5)
            if r.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 503, r.text
        assert "have not reached the database" in r.json()["reasons"][0]
        assert r.json()["usage_backlog_rows"] == 1
        assert scrape(gw)[("nexusai_usage_backlog_rows", ())] == 1
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE usage_record_away RENAME TO usage_record"))
    assert len(gw.wait_rows(1)) == 1  # the retry writes it once the table is back
    deadline = time.monotonic() + 10
    while requests.get(gw.url + "/health/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
