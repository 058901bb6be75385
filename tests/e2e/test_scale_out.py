"""Three `python run.py proxy` processes on one database and one Redis: a key's limits hold for all of them.

Requests go round-robin over the three proxies. Each test gets a key of its own, so the
processes (started once for the module) serve them all. Every exchange uses 24 tokens
(17 prompt + 7 completion, as the fake upstream reports them).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import aiohttp
import pytest
import requests
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.migrate import upgrade_database
from shared.models import UsageRecord
from tests.conftest import PG_ADMIN_URL, throwaway_postgres_database
from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.nexus_process import NexusProcess
from tests.support.redis_server import RedisServer
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

TOKENS = 24  # per exchange
LEASE_S = 2.0
REDIS_PASSWORD = "nx-redis-secret-7f3a9c"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "scale"}], "max_tokens": 10}


class Trio:
    """Three proxies sharing the database and Redis; the fake upstream behind them."""

    def __init__(self, proxies: list[NexusProcess], engine: Engine, upstream: FakeUpstream, redis: RedisServer):
        self.proxies = proxies
        self.engine = engine
        self.upstream = upstream
        self.redis = redis
        self._keys = 0

    def key(self, **limits: object) -> tuple[int, str]:
        """A new client key with these limits, once every proxy has loaded it."""
        self._keys += 1
        raw = f"nx-scale-key-{self._keys:04d}-0000000000000000"
        key_id = add_key(self.engine, raw, **limits)
        deadline = time.monotonic() + 10
        for proxy in self.proxies:
            while requests.get(proxy.proxy_url + "/v1/models", headers=auth(raw), timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "a proxy did not load the new key"
                time.sleep(0.05)
        return key_id, raw

    def post(self, i: int, raw: str, **extra: object) -> requests.Response:
        """One chat request to proxy i % 3."""
        return requests.post(self.proxies[i % 3].proxy_url + "/v1/chat/completions", headers=auth(raw),
                             json={**BODY, **extra}, timeout=15)

    def rows(self, key_id: int) -> int:
        """Usage rows of the key in the database."""
        with Session(self.engine) as s:
            return s.scalar(select(func.count()).select_from(UsageRecord).where(UsageRecord.key_id == key_id)) or 0

    def wait_rows(self, key_id: int, n: int) -> int:
        """Wait (bounded) for n usage rows of the key."""
        deadline = time.monotonic() + 15
        while self.rows(key_id) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # and nothing more arrives
        return self.rows(key_id)

    def wait_sharers(self) -> None:
        """Wait (bounded) until each proxy counts exactly the three live processes in Redis (heartbeats)."""
        deadline = time.monotonic() + LEASE_S + 10
        while not all(self.ready(i).get("limits_shared_by") == 3 for i in range(3)):
            assert time.monotonic() < deadline, [self.ready(i) for i in range(3)]
            time.sleep(0.1)

    def ready(self, i: int) -> dict[str, object]:
        """Proxy i's readiness body."""
        body: dict[str, object] = requests.get(self.proxies[i].proxy_url + "/health/ready", timeout=5).json()
        return body


def auth(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


async def burst(trio: Trio, raw: str, n: int, **extra: object) -> list[int]:
    """n concurrent requests, round-robin over the proxies; their statuses."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:
        async def one(i: int) -> int:
            async with session.post(trio.proxies[i % 3].proxy_url + "/v1/chat/completions", headers=auth(raw),
                                    json={**BODY, **extra}) as r:
                await r.read()
                return r.status
        return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.fixture(scope="module")
def module_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database for the module's proxies."""
    if not PG_ADMIN_URL:
        url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'nexusai.db'}"
        upgrade_database(url)
        yield url
        return
    with throwaway_postgres_database("nx_scale_") as url:
        upgrade_database(url)
        yield url


@pytest.fixture(scope="module")
def trio(module_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    """Three `run.py proxy` processes with REDIS_URL (a Redis of their own, with a password), a priced model."""
    redis_server = RedisServer(tmp_path_factory.mktemp("redis"), password=REDIS_PASSWORD).start()
    upstream = FakeUpstream().start()
    upstream.default = Scenario(completion_tokens=7)
    engine = make_engine(module_database)
    pid = add_provider(engine, "fake", upstream.base_url)
    add_model(engine, pid, "gpt-4o-mini", input_price="10", output_price="30")  # 0.00038 USD an exchange
    base = tmp_path_factory.mktemp("proxies")
    env = {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": "scale:", "REDIS_LEASE_S": str(LEASE_S),
           "USAGE_FLUSH_INTERVAL_S": "0.05"}  # the config poll at its default (1 s): revocation as shipped
    proxies = [NexusProcess(module_database, base / f"p{i}", mode="proxy", env=env) for i in range(3)]
    threads = [threading.Thread(target=p.start) for p in proxies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert all(p.running for p in proxies), [p.stderr[-2000:] for p in proxies]
        trio = Trio(proxies, engine, upstream, redis_server)
        trio.wait_sharers()
        yield trio
    finally:
        for p in proxies:
            p.close()
        engine.dispose()
        upstream.stop()
        redis_server.stop()


async def test_rpm_is_exact_over_three_processes(trio: Trio) -> None:
    key_id, raw = trio.key(rpm=30)
    statuses = await burst(trio, raw, 90)
    assert statuses.count(200) == 30 and statuses.count(429) == 60
    assert trio.wait_rows(key_id, 30) == 30


def test_tpm_is_exact_over_three_processes(trio: Trio) -> None:
    key_id, raw = trio.key(tpm=10 * TOKENS)
    statuses = [trio.post(i, raw).status_code for i in range(30)]
    # Admitted while the minute's tokens are under the figure: 10 exchanges of 24 tokens.
    assert statuses == [200] * 10 + [429] * 20
    assert trio.wait_rows(key_id, 10) == 10


def test_daily_quota_is_exact_over_three_processes(trio: Trio) -> None:
    key_id, raw = trio.key(token_quota=7 * TOKENS, quota_period="daily")
    statuses = [trio.post(i, raw).status_code for i in range(21)]
    assert statuses == [200] * 7 + [429] * 14
    r = trio.post(0, raw)
    assert r.json()["error"]["code"] == "insufficient_quota" and "daily" in r.json()["error"]["message"]
    assert trio.wait_rows(key_id, 7) == 7


def test_budget_is_exact_over_three_processes(trio: Trio) -> None:
    key_id, raw = trio.key(budget_usd=Decimal("0.0019"))  # 5 exchanges of 0.00038 USD reach it
    statuses = [trio.post(i, raw).status_code for i in range(15)]
    assert statuses == [200] * 5 + [429] * 10
    assert trio.wait_rows(key_id, 5) == 5
    with Session(trio.engine) as s:
        spent = s.scalar(select(func.sum(UsageRecord.cost_usd)).where(UsageRecord.key_id == key_id))
    assert spent == Decimal("0.0019")


async def test_concurrency_is_shared_and_a_crashed_holder_gives_its_slots_back(trio: Trio) -> None:
    key_id, raw = trio.key(max_concurrency=3)
    trio.upstream.default = Scenario(completion_tokens=7, delay_s=1.0)
    try:
        statuses = await burst(trio, raw, 9)
        assert sorted(statuses) == [200] * 3 + [429] * 6
        # Two slots held by streams on proxy 0, which then dies without giving them back.
        trio.upstream.default = Scenario(completion_tokens=7, first_chunk_pause_s=30)
        victim = trio.proxies[0]
        held = [requests.post(victim.proxy_url + "/v1/chat/completions", headers=auth(raw), stream=True,
                              json={**BODY, "stream": True}, timeout=15) for _ in range(2)]
        assert all(r.status_code == 200 for r in held)
        trio.upstream.default = Scenario(completion_tokens=7)
        assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
        crashed_at = time.monotonic()
        for r in held:
            r.close()
        trio.upstream.default = Scenario(completion_tokens=7, delay_s=0.5)
        # The dead process's two slots are still held: of three at once, one fits.
        assert sorted(await burst_on(trio, raw, [1, 2, 1])) == [200, 429, 429]
        came_back = None
        deadline = crashed_at + LEASE_S + 5
        while time.monotonic() < deadline:  # its leases run out within LEASE_S: then three fit again
            statuses = await burst_on(trio, raw, [1, 2, 1])
            if statuses.count(200) == 3:
                came_back = time.monotonic() - crashed_at
                break
            assert statuses.count(200) >= 1
            await asyncio.sleep(0.2)
        assert came_back is not None and came_back <= LEASE_S + 1.5
    finally:
        trio.upstream.default = Scenario(completion_tokens=7)
        trio.proxies[0].start()


async def burst_on(trio: Trio, raw: str, which: list[int]) -> list[int]:
    """Concurrent requests to the given proxies; their statuses."""
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> int:
            async with session.post(trio.proxies[i].proxy_url + "/v1/chat/completions", headers=auth(raw),
                                    json=BODY) as r:
                await r.read()
                return r.status
        return await asyncio.gather(*(one(i) for i in which))


async def test_redis_away_means_local_shares_then_shared_limits_again(trio: Trio) -> None:
    key_id, raw = trio.key(rpm=30)
    trio.wait_sharers()  # a process restarted by the test before is counted once, the dead one no more
    trio.redis.stop()
    try:
        # Every request still succeeds or meets its process's share: 10 of rpm 30 each.
        statuses = await burst(trio, raw, 90)
        assert statuses.count(200) == 30 and statuses.count(429) == 60
        assert trio.wait_rows(key_id, 30) == 30
        for i in range(3):
            ready = trio.ready(i)
            assert ready["status"] == "degraded" and ready["limits"] == "local"
            assert "Redis is unreachable" in str(ready["degraded"])
            assert "Redis is unreachable" in trio.proxies[i].stderr
        metrics = requests.get(trio.proxies[0].proxy_url + "/metrics", timeout=5,
                               headers=auth(str(trio.proxies[0].admin_token))).text
        assert 'nexusai_limits_backend{backend="local"} 1.0' in metrics
    finally:
        trio.redis.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(trio.ready(i)["limits"] == "redis" for i in range(3)):
        time.sleep(0.1)
    assert all(trio.ready(i)["status"] == "ready" for i in range(3))
    assert all("Redis is back" in p.stderr for p in trio.proxies)
    # Shared again: one figure for the three processes.
    _, shared = trio.key(rpm=12)
    statuses = await burst(trio, shared, 36)
    assert statuses.count(200) == 12


def test_the_redis_password_is_in_no_output_log_or_readiness(trio: Trio) -> None:
    # Run after the outage test: its warnings and errors are in these logs too.
    for p in trio.proxies:
        logs = "".join(f.read_text() for f in p.log_dir.glob("*.log"))
        assert "Redis is unreachable" in logs and "Redis is back" in logs
        for text in (p.stderr, p.stdout, logs, requests.get(p.proxy_url + "/health/ready", timeout=5).text):
            assert REDIS_PASSWORD not in text


def test_a_disabled_key_is_refused_by_every_process_within_two_seconds(trio: Trio) -> None:
    from shared.db import bump_config_version
    from shared.models import ApiKey

    key_id, raw = trio.key(rpm=1000)
    assert all(trio.post(i, raw).status_code == 200 for i in range(3))
    with Session(trio.engine) as s, s.begin():
        s.get_one(ApiKey, key_id).enabled = False
        bump_config_version(s)
    disabled_at = time.monotonic()
    refused: set[int] = set()
    while len(refused) < 3 and time.monotonic() - disabled_at < 5:
        for i in range(3):
            if i not in refused and trio.post(i, raw).status_code == 401:
                refused.add(i)
        time.sleep(0.05)
    assert refused == {0, 1, 2} and time.monotonic() - disabled_at < 2.0
