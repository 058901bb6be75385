"""Operations through run.py: provider health in the admin, and metrics across gunicorn's workers.

A provider that accepts connections and never answers (priority 10, `timeout_s` 1) sits
in front of a healthy one; the proxy's breaker opens, and the admin's
`GET /providers/{id}/health` shows it from the rows the proxy writes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.e2e.test_proxy_sdk import wait_until_served
from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.nexus_process import DEFAULT_ADMIN_TOKEN, NexusProcess
from tests.support.prometheus_text import samples

pytestmark = pytest.mark.db


def test_provider_health_and_metrics(nexus_factory: Any, upstream: FakeUpstream) -> None:
    hole = FakeUpstream(default=Scenario(delay_s=30)).start()
    try:
        nx: NexusProcess = nexus_factory(env={"CONFIG_POLL_INTERVAL": "0.5", "BREAKER_FAILURES": "2",
                                              "BREAKER_COOLDOWN_S": "60", "HEALTH_WRITE_INTERVAL_S": "0.5",
                                              "ADMIN_WORKERS": "2"})
        ids = {}
        for name, url, priority in (("stuck", hole.base_url, 10), ("healthy", upstream.base_url, 0)):
            r = nx.admin("POST", "/providers", json={"name": name, "server_url": url, "priority": priority,
                                                     "timeout_s": 1})
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
            assert nx.admin("POST", "/provider_models", json={"provider_id": ids[name],
                                                              "model_name": "m"}).status_code == 201
        key = nx.admin("POST", "/keys", json={"name": "ops"}).json()["key"]
        wait_until_served(nx, key, "m")
        for _ in range(5):
            r = requests.post(nx.proxy_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
            assert r.status_code == 200

        deadline = time.monotonic() + 10
        while True:
            stuck = nx.admin("GET", f"/providers/{ids['stuck']}/health").json()
            if stuck["state"] == "open" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert stuck["state"] == "open", stuck
        assert (stuck["requests"], stuck["errors"], stuck["error_rate"]) == (2, 2, 1.0)
        assert stuck["last_error"] == "first-byte timeout" and stuck["last_error_at"]
        assert stuck["latency_ms"] == {"p50": None, "p95": None} and len(stuck["instances"]) == 1
        # Rows are written every 0.5 s: the one holding the fifth request may come a write later.
        deadline = time.monotonic() + 10
        while True:
            healthy = nx.admin("GET", f"/providers/{ids['healthy']}/health").json()
            if healthy["requests"] >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (healthy["state"], healthy["requests"], healthy["errors"]) == ("closed", 5, 0)
        assert 0 < healthy["latency_ms"]["p50"] <= healthy["latency_ms"]["p95"] < 1000
        assert nx.admin("GET", "/providers/999/health").status_code == 404

        proxy = samples(requests.get(nx.proxy_url + "/metrics", timeout=5,
                                      headers={"Authorization": f"Bearer {DEFAULT_ADMIN_TOKEN}"}).text)
        assert proxy[("nexusai_circuit_state", (("model", ""), ("provider", "stuck")))] == 2
        assert proxy[("nexusai_failovers_total", (("api", "chat"), ("model", "m")))] == 2
        # Two gunicorn workers answer in turn; every scrape adds both workers' counts up.
        for _ in range(6):
            assert nx.admin("GET", "/keys").status_code == 200
        seen = set()
        for _ in range(4):
            admin = samples(nx.admin("GET", "/metrics").text)
            seen.add(admin[("nexusai_admin_requests_total", (("method", "GET"), ("route", "/keys"),
                                                             ("status", "200")))])
        assert seen == {6.0}
        assert ("process_cpu_seconds_total", ()) not in admin  # the shared-directory mode, not one worker's view
    finally:
        hole.stop()
