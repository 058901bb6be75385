"""PROXY_WORKERS=N: `python run.py` runs N proxy processes on one port, supervised and stopped together."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.models import UsageRecord
from tests.e2e.conftest import NexusFactory
from tests.support.fake_upstream import FakeUpstream
from tests.support.nexus_process import NexusProcess, pid_alive
from tests.support.prometheus_text import sample_values
from tests.support.redis_server import RedisServer
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

KEY = "nx-workers-key-00000000000000000"
PROXY_LINE = re.compile(r"^NexusAI proxy listening on \S+ \(pid (\d+)\)$", re.MULTILINE)


def seed(database_url: str, upstream: FakeUpstream, **limits: object) -> None:
    engine = make_engine(database_url)
    pid = add_provider(engine, "fake", upstream.base_url)
    add_model(engine, pid, "gpt-4o-mini", input_price="0.15", output_price="0.60")
    add_key(engine, KEY, **limits)
    engine.dispose()


def proxy_pids(nx: NexusProcess, n: int) -> list[int]:
    """The proxy workers' pids as run.py announced them (waits, bounded, for n)."""
    deadline = time.monotonic() + 20
    while len(PROXY_LINE.findall(nx.stdout)) < n:
        assert time.monotonic() < deadline, nx.stdout
        time.sleep(0.1)
    return [int(p) for p in PROXY_LINE.findall(nx.stdout)]


def chat(url: str) -> int:
    # A new connection each time, so the kernel spreads them over the workers.
    r = requests.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}", "Connection": "close"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    return r.status_code


def test_two_workers_share_one_port_and_one_scrape_counts_both(
    nexus_factory: NexusFactory, database_url: str, upstream: FakeUpstream, redis_server: RedisServer,
    redis_prefix: str,
) -> None:
    seed(database_url, upstream, rpm=50)
    nx = nexus_factory({"PROXY_WORKERS": "2", "REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": redis_prefix})
    pids = proxy_pids(nx, 2)
    assert len(set(pids)) == 2
    assert "without REDIS_URL" not in nx.stderr
    statuses = [chat(nx.proxy_url) for _ in range(60)]
    assert statuses.count(200) == 50 and statuses.count(429) == 10  # one limit for both workers
    time.sleep(1.5)  # each worker publishes its figures once a second (and writes its log lines)
    logs = {name: (nx.log_dir / f"{name}.log").read_text() for name in ("proxy-1", "proxy-2")}
    served = {name: text.count("[nexusai.proxy.access]") for name, text in logs.items()}
    assert all(served.values()) and sum(served.values()) == 60, served  # both took connections
    for _ in range(6):  # whichever worker answers, it counts both
        text = requests.get(nx.proxy_url + "/metrics", timeout=5, headers={
            "Authorization": f"Bearer {nx.admin_token}", "Connection": "close"}).text
        requests_by_status = sample_values(text, "nexusai_requests_total")
        assert sum(requests_by_status.values()) == 50
        refused = sample_values(text, "nexusai_refusals_total")
        assert sum(refused.values()) == 10
        assert sample_values(text, "nexusai_limits_backend") == {(("backend", "redis"),): 2.0}
        assert "process_cpu_seconds_total" not in text  # one process's figure would pass for all
    engine = make_engine(database_url)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(UsageRecord)) == 50
    engine.dispose()
    assert nx.stop() == 0


def test_a_dead_worker_stops_the_rest_and_says_which(nexus_factory: NexusFactory, database_url: str,
                                                     upstream: FakeUpstream) -> None:
    seed(database_url, upstream)
    nx = nexus_factory({"PROXY_WORKERS": "2"})
    pids = proxy_pids(nx, 2)
    assert "PROXY_WORKERS=2 without REDIS_URL" in nx.stderr  # limits would multiply: said once
    assert nx.stderr.count("without REDIS_URL") == 1
    assert chat(nx.proxy_url) == 200
    os.kill(pids[1], signal.SIGKILL)
    assert nx.wait(60) == 1
    assert re.search(r"proxy-\d \(pid %d\) stopped unexpectedly: killed by signal SIGKILL" % pids[1], nx.stderr)
    assert not pid_alive(pids[0])


def test_workers_need_a_fixed_port(nexus_factory: NexusFactory) -> None:
    nx = nexus_factory({"PROXY_WORKERS": "2", "PROXY_PORT": "0"}, start=False)
    nx._launch()
    assert nx.wait(30) == 2
    assert "PROXY_WORKERS > 1 needs a fixed PROXY_PORT" in nx.stderr
