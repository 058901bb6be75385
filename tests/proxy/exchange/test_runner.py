"""The exchange runner records every exchange exactly once, wherever its task is cancelled.

A test renderer (a front written here) cancels its own task at one stage of the
exchange; the real runner, transport, fake upstream, limiter and journal do the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from proxy_app.app_keys import STATE
from proxy_app.errors import ProxyError
from proxy_app.exchange import Exchange, Outcome, WholeReply, open_exchange
from proxy_app.fronts.chat import CHAT
from proxy_app.hub import Piece
from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_key

pytestmark = pytest.mark.db

LIMITED_KEY = "nx-runner-limited-key-0123456789abcdefghijkl"
MESSAGES = [{"role": "user", "content": "stage by stage"}]


class StagedRenderer:
    """Renders nothing; cancels its own task when the exchange reaches `stage`."""

    def __init__(self, stage: str | None) -> None:
        self.stage = stage
        self.seen: list[str] = []

    async def _at(self, stage: str) -> None:
        self.seen.append(stage)
        if stage == self.stage:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(1)  # the cancellation lands here, inside the runner's await

    async def start_stream(self, exchange: Exchange) -> None:
        await self._at("start_stream")

    async def pieces(self, exchange: Exchange, pieces: list[Piece], final: bool) -> None:
        await self._at("final_pieces" if final else "pieces")

    async def finished(self, exchange: Exchange, outcome: Outcome) -> None:
        await self._at("finished")

    async def whole(self, exchange: Exchange, reply: WholeReply, outcome: Outcome) -> None:
        await self._at("whole")

    async def failed(self, exchange: Exchange, error: ProxyError, outcome: Outcome) -> None:
        await self._at("failed")


def _on_proxy(gateway: Gateway, make: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    """Run a coroutine on the proxy's own loop (where its services live)."""
    return gateway.proxy.call(make(), timeout)


async def _exchange(gateway: Gateway, body: dict[str, Any], key: str) -> Exchange:
    state = gateway.proxy.app[STATE]
    snapshot_key = next(k for k in state.config.snapshot.keys_by_hash.values() if k.name == key)
    return await open_exchange(state, CHAT, snapshot_key, body, conversation_header=None, transport="http")


def _run_staged(gateway: Gateway, body: dict[str, Any], stage: str | None,
                cancel_after_s: float | None = None,
                cancel_when: Callable[[Exchange], bool] | None = None) -> tuple[list[str], bool]:
    """Run one exchange with a StagedRenderer; (stages seen, whether the task ended cancelled)."""

    async def go() -> tuple[list[str], bool]:
        exchange = await _exchange(gateway, body, "limited")
        renderer = StagedRenderer(stage)
        task = asyncio.get_running_loop().create_task(exchange.run(renderer))
        if cancel_after_s is not None:
            await asyncio.sleep(cancel_after_s)
            task.cancel()
        if cancel_when is not None:
            for _ in range(100_000):
                if cancel_when(exchange) or task.done():
                    break
                await asyncio.sleep(0)
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return renderer.seen, True
        return renderer.seen, False

    return _on_proxy(gateway, go)


@pytest.fixture
def limited(gateway: Gateway) -> Gateway:
    """The gateway with a key allowed one request at a time: a leaked ticket would lock it."""
    add_key(gateway.engine, LIMITED_KEY, name="limited", max_concurrency=1)
    state = gateway.proxy.app[STATE]
    _on_proxy(gateway, state.config.load)
    return gateway


def _in_flight(gateway: Gateway) -> int:
    state = gateway.proxy.app[STATE]
    key = next(k for k in state.config.snapshot.keys_by_hash.values() if k.name == "limited")

    async def read() -> int:
        await asyncio.sleep(0.05)  # a recording moved to its own task settles on the next turns
        for _ in range(100):
            if not state.background:
                break
            await asyncio.sleep(0.02)
        return state.limiter.state(key).in_flight  # type: ignore[attr-defined]

    return int(_on_proxy(gateway, read))


STREAM = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
JSON = {"model": "gpt-4o-mini", "messages": MESSAGES}


@pytest.mark.parametrize(("body", "stage", "status", "error_type"), [
    (STREAM, "start_stream", 499, "client_closed"),
    (STREAM, "pieces", 499, "client_closed"),
    # The row is recorded before the end is handed over: cancelled there, it is a completed request.
    (STREAM, "final_pieces", 200, None),
    (STREAM, "finished", 200, None),
    (JSON, "whole", 200, None),
])
def test_cancelled_at_any_stage_the_exchange_is_recorded_once(
    limited: Gateway, body: dict[str, Any], stage: str, status: int, error_type: str | None,
) -> None:
    limited.upstream.default = Scenario(chunk_delay_s=0.01)  # one read per chunk: every stage happens
    seen, cancelled = _run_staged(limited, dict(body), stage)
    assert cancelled and seen[-1] == stage
    (row,) = limited.wait_rows(1)
    assert (row.status_code, row.error_type) == (status, error_type)
    assert _in_flight(limited) == 0  # the ticket was settled: the key's one slot is free again
    assert len(limited.flushed_rows()) == 1


def test_cancelled_while_waiting_for_the_upstream_is_recorded_once(limited: Gateway) -> None:
    limited.upstream.default = Scenario(delay_s=2.0)
    seen, cancelled = _run_staged(limited, dict(STREAM), None, cancel_after_s=0.3)
    assert cancelled and seen == []
    (row,) = limited.wait_rows(1)
    assert (row.status_code, row.error_type, row.total_tokens) == (499, "client_closed", 0)
    assert _in_flight(limited) == 0


def test_cancelled_while_a_large_reply_is_counted_off_the_loop(limited: Gateway) -> None:
    # No upstream usage and a prompt too large to count on the loop: counting runs on a worker
    # thread while the task is cancelled; the row still comes, once, with the estimate.
    limited.upstream.default = Scenario(report_usage=False)
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "word " * 20_000}]}
    # Cancelled the moment the recording starts: that is while the count runs on its thread.
    seen, cancelled = _run_staged(limited, body, None, cancel_when=lambda ex: ex.recording)
    assert cancelled and "final_pieces" not in seen
    (row,) = limited.wait_rows(1)
    assert (row.status_code, row.token_source) == (200, "estimated") and row.prompt_tokens > 20_000
    assert _in_flight(limited) == 0


def test_cancelled_while_telling_the_client_of_a_failure(limited: Gateway) -> None:
    limited.upstream.default = Scenario(status=500, error_body={"error": {"message": "down", "type": "server_error"}})
    seen, cancelled = _run_staged(limited, dict(JSON), "whole")
    assert cancelled
    (row,) = limited.wait_rows(1)
    assert (row.status_code, row.error_type) == (500, "upstream_error")
    assert _in_flight(limited) == 0


def test_an_uncancelled_exchange_is_recorded_once_too(limited: Gateway) -> None:
    seen, cancelled = _run_staged(limited, dict(STREAM), None)
    assert not cancelled and seen[0] == "start_stream" and seen[-1] == "finished"
    (row,) = limited.wait_rows(1)
    assert (row.status_code, row.error_type, row.token_source) == (200, None, "upstream")
    assert _in_flight(limited) == 0


def test_cancelled_while_telling_the_client_the_stream_broke(limited: Gateway) -> None:
    limited.upstream.default = Scenario(break_after_chunks=2, report_usage=False)
    seen, cancelled = _run_staged(limited, dict(STREAM), "failed")
    assert cancelled and seen[-1] == "failed"
    (row,) = limited.wait_rows(1)
    assert (row.status_code, row.error_type) == (502, "upstream_unreachable") and row.completion_tokens > 0
    assert _in_flight(limited) == 0
