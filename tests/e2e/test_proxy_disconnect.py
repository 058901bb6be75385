"""A client leaving mid-stream through run.py: upstream cancelled, delivered part billed (499)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.raw_client import stream_until

pytestmark = pytest.mark.db


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream(default=Scenario(reply="one two three four five six seven eight nine ten",
                                         chunk_delay_s=3.0, report_usage=False)).start()
    yield fake
    fake.stop()


def test_disconnect_mid_stream_cancels_upstream_and_bills_499(nexus_factory, upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    nx = nexus_factory()
    pid = nx.admin("POST", "/providers", json={"name": "fake", "server_url": upstream.base_url,
                                               "server_key": "sk-e2e-0000"}).json()["id"]
    nx.admin("POST", "/provider_models", json={"provider_id": pid, "model_name": "gpt-4o-mini",
                                               "input_price": 1, "output_price": 2})
    key = nx.admin("POST", "/keys", json={"name": "k"}).json()["key"]
    time.sleep(1.5)  # the proxy polls the config version about once a second

    body = {"model": "gpt-4o-mini", "stream": True, "conversation_id": "drop-conv",
            "messages": [{"role": "user", "content": "count"}]}
    assert b"one" in stream_until(nx.proxy_url, key, body, b"one")
    # The next chunk is 3 s away: only cancelling the handler on disconnect cuts the call sooner.
    deadline = time.monotonic() + 1.5
    while upstream.cancelled < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.cancelled == 1

    deadline = time.monotonic() + 10
    while True:
        stats = nx.admin("GET", "/stats/conversation/drop-conv")
        if stats.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    figures = stats.json()
    assert figures["requests"] == 1 and figures["errors"] == 1  # recorded with status 499
    assert 0 < figures["completion_tokens"] < 10 and figures["cost_usd"] > 0
