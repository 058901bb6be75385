"""WebSocket /ws/chat against run.py-started admin + proxy, configured through the admin API."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.db import make_engine
from shared.models import UsageRecord
from tests.support.fake_upstream import DEFAULT_REPLY, FakeUpstream, Scenario
from tests.support.nexus_process import NexusProcess

pytestmark = pytest.mark.db

TIMEOUT_S = 10.0
SERVER_KEY = "sk-e2e-ws-upstream-secret-5521"
PERSONAL_KEY = "nx-e2e-ws-personal-key-0000000000"
MESSAGES = [{"role": "user", "content": "Hello over a socket"}]


@pytest.fixture
def nx(nexus_factory, upstream: FakeUpstream) -> NexusProcess:  # type: ignore[no-untyped-def]
    proc: NexusProcess = nexus_factory(env={"CONFIG_POLL_INTERVAL": "0.5"})
    r = proc.admin("POST", "/providers", json={"name": "fake", "server_url": upstream.base_url,
                                               "server_key": SERVER_KEY, "personalized_key": PERSONAL_KEY,
                                               "description": "fake upstream"})
    assert r.status_code == 201, r.text
    r = proc.admin("POST", "/provider_models", json={"provider_id": r.json()["id"], "model_name": "gpt-4o-mini",
                                                     "input_price": 0.15, "output_price": 0.6})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        r = requests.get(proc.proxy_url + "/v1/models", headers={"X-API-Key": PERSONAL_KEY}, timeout=5)
        if r.status_code == 200 and r.json()["data"]:
            return proc
        time.sleep(0.05)
    raise AssertionError("the proxy never served gpt-4o-mini")


def ws_url(nx: NexusProcess) -> str:
    return nx.proxy_url.replace("http://", "ws://", 1) + "/ws/chat"


async def turn(ws: ClientConnection, chat_id: str, **extra: Any) -> list[dict[str, Any]]:
    """Send one chat and collect its messages up to its `done` or `error`."""
    await ws.send(json.dumps({"type": "chat", "id": chat_id, "model": "gpt-4o-mini", "messages": MESSAGES, **extra}))
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT_S):
        while not out or out[-1]["type"] not in ("done", "error"):
            out.append(json.loads(await ws.recv()))
    return out


def conversation_stats(nx: NexusProcess, conversation_id: str) -> dict[str, Any]:
    """GET /stats/conversation/{id}, waiting (bounded) until both turns are counted."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        r = nx.admin("GET", f"/stats/conversation/{conversation_id}")
        if r.status_code == 200 and r.json()["requests"] == 2 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return dict(r.json())
        time.sleep(0.05)


def figures(stats: Any) -> Any:
    """Stats without what differs per conversation anyway: its id, timestamps and timings."""
    if isinstance(stats, dict):
        return {k: figures(v) for k, v in stats.items()
                if k not in {"conversation_id", "first_at", "last_at"} and "latency" not in k and "ttft" not in k}
    return stats


async def test_ws_conversation_matches_http_in_stats_and_bad_key_gets_4401(nx: NexusProcess) -> None:
    for _ in range(2):
        r = await asyncio.to_thread(
            requests.post, nx.proxy_url + "/v1/chat/completions", timeout=TIMEOUT_S,
            headers={"Authorization": f"Bearer {PERSONAL_KEY}", "X-Conversation-Id": "conv-e2e-http"},
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        )
        assert r.status_code == 200
    # The key in the first message, as a browser sends it; no conversation id: one per socket.
    async with connect(ws_url(nx), open_timeout=TIMEOUT_S) as ws:
        await ws.send(json.dumps({"type": "auth", "api_key": PERSONAL_KEY}))
        first, second = await turn(ws, "t1"), await turn(ws, "t2")
    for messages in (first, second):
        assert [m["type"] for m in messages[:1] + messages[-2:]] == ["start", "usage", "done"]
        assert "".join(m.get("content", "") for m in messages if m["type"] == "delta") == DEFAULT_REPLY
    conversation = first[0]["conversation_id"]
    assert second[0]["conversation_id"] == conversation

    http_stats = await asyncio.to_thread(conversation_stats, nx, "conv-e2e-http")
    ws_stats = await asyncio.to_thread(conversation_stats, nx, conversation)
    assert figures(ws_stats) == figures(http_stats)
    assert ws_stats["requests"] == 2 and ws_stats["total_tokens"] == 2 * 24 and ws_stats["errors"] == 0

    async with connect(ws_url(nx) + "?api_key=nx-e2e-wrong-key-000000", open_timeout=TIMEOUT_S) as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        assert message["type"] == "error" and message["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT_S)
    assert ws.close_code == 4401


async def test_sigterm_flushes_in_flight_usage_and_closes_1001(
    nx: NexusProcess, upstream: FakeUpstream, database_url: str
) -> None:
    upstream.default = Scenario(first_chunk_pause_s=8.0)
    async with connect(ws_url(nx), additional_headers={"Authorization": f"Bearer {PERSONAL_KEY}"},
                       open_timeout=TIMEOUT_S) as ws:
        await ws.send(json.dumps({"type": "chat", "id": "c1", "model": "gpt-4o-mini", "messages": MESSAGES}))
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(TIMEOUT_S):
            while not seen or seen[-1]["type"] != "delta":
                seen.append(json.loads(await ws.recv()))
        stopping = asyncio.create_task(asyncio.to_thread(nx.stop))
        message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        assert message["type"] == "error" and message["status"] == 503
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT_S)
        assert ws.close_code == 1001
        assert await stopping == 0
    engine = make_engine(database_url)
    try:
        with Session(engine) as s:
            (row,) = s.scalars(select(UsageRecord)).all()
    finally:
        engine.dispose()
    assert (row.request_id, row.transport, row.status_code) == (seen[0]["request_id"], "ws", 503)
    assert row.completion_tokens >= 1 and row.conversation_id == seen[0]["conversation_id"]
