"""A provider's http_proxy: the real proxy reaches its upstream through a forward proxy."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import requests

from tests.proxy.conftest import Gateway
from tests.support.http_servers import ForwardProxy
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

T = TypeVar("T")
MESSAGES = [{"role": "user", "content": "hi"}]


class _LoopThread:
    """An event loop in a thread, so a loopback server keeps serving while the test blocks on requests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="forward-proxy", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    """A started forward proxy on loopback, served from its own thread."""
    runner = _LoopThread()
    proxy = runner.run(ForwardProxy().start())
    yield proxy
    runner.run(proxy.stop())
    runner.close()


def test_chat_goes_through_the_providers_proxy_with_its_credentials(
    make_gateway, engine, upstream, forward_proxy: ForwardProxy  # type: ignore[no-untyped-def]
) -> None:
    gw: Gateway = make_gateway(seed=False)
    provider = add_provider(engine, "behind-proxy", upstream.base_url,
                            http_proxy=forward_proxy.url("alice", "s3cr%40t"))
    add_model(engine, provider, "proxied-model")
    add_key(engine, gw.key)
    time.sleep(0.6)  # the proxy's config poll
    for stream in (False, True):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "proxied-model", "messages": MESSAGES, "stream": stream})
        assert r.status_code == 200, r.text
        assert "Hello" in r.text
    assert len(upstream.chat_requests()) == 2
    target = upstream.base_url + "/chat/completions"
    assert [s.request_line for s in forward_proxy.seen] == [f"POST {target} HTTP/1.1"] * 2
    assert {s.credentials() for s in forward_proxy.seen} == {"alice:s3cr@t"}  # percent-decoded
    assert not forward_proxy.errors
    rows = gw.wait_rows(2)
    assert [r.status_code for r in rows] == [200, 200] and {r.provider_name for r in rows} == {"behind-proxy"}
