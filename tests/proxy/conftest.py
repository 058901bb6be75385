"""Proxy fixtures: a fake upstream, a seeded database and the real proxy on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from proxy_app.app_keys import STATE
from shared.db import make_engine
from shared.models import UsageRecord
from shared.settings import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_thread import ProxyThread
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

CLIENT_KEY = "nx-test-client-key-0123456789abcdefghijklmnop"
SERVER_KEY = "sk-upstream-secret-0001-abcdefgh"


@dataclass
class Gateway:
    """A running proxy with its database, fake upstream and client key."""

    proxy: ProxyThread
    upstream: FakeUpstream
    engine: Engine
    settings: Settings
    key: str
    provider_id: int

    @property
    def url(self) -> str:
        """Base URL of the proxy."""
        return self.proxy.url

    def headers(self, key: str | None = None) -> dict[str, str]:
        """Auth headers for the client key."""
        return {"Authorization": f"Bearer {key or self.key}"}

    def wait_config(self) -> None:
        """Load the config snapshot now (as the poller would within a second), on the proxy's loop."""
        self.proxy.call(self.proxy.app[STATE].config.load())

    def usage_rows(self) -> list[UsageRecord]:
        """Every usage row, oldest first."""
        with Session(self.engine) as s:
            return list(s.scalars(select(UsageRecord).order_by(UsageRecord.id)))

    def flushed_rows(self, timeout: float = 10.0) -> list[UsageRecord]:
        """Every usage row once the proxy's writer has written all it was handed."""
        from proxy_app.app_keys import STATE

        assert self.proxy.app[STATE].usage.wait_idle(timeout)
        return self.usage_rows()

    def wait_rows(self, n: int, timeout: float = 10.0) -> list[UsageRecord]:
        """Wait (bounded) until at least n usage rows are written and none is still queued."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with Session(self.engine) as s:
                if (s.scalar(select(func.count()).select_from(UsageRecord)) or 0) >= n:
                    break
            time.sleep(0.05)
        # The writer batches rows over its flush interval: let it finish what was submitted.
        self.proxy.app[STATE].usage.wait_idle(max(0.0, deadline - time.monotonic()))
        return self.usage_rows()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the test database."""
    eng = make_engine(settings.database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def make_gateway(settings: Settings, upstream: FakeUpstream, engine: Engine) -> Iterator[Callable[..., Gateway]]:
    """Build a proxy over a seeded DB: provider 'fake' serving gpt-4o-mini and gpt-3.5-turbo."""
    started: list[ProxyThread] = []

    def build(seed: bool = True, **overrides: object) -> Gateway:
        provider_id = 0
        if seed:
            provider_id = add_provider(engine, "fake", upstream.base_url, server_key=SERVER_KEY)
            add_model(engine, provider_id, "gpt-4o-mini", input_price="0.15", output_price="0.60")
            add_model(engine, provider_id, "gpt-3.5-turbo", input_price="0.50", output_price="1.50")
            add_key(engine, CLIENT_KEY)
        proxy = ProxyThread(settings.with_overrides(**overrides)).start()
        started.append(proxy)
        return Gateway(proxy, upstream, engine, proxy.settings, CLIENT_KEY, provider_id)

    yield build
    for proxy in started:
        proxy.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    """The default seeded gateway."""
    return make_gateway()
