"""WebSocket /ws/chat against the real proxy on loopback, with the `websockets` client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import update
from sqlalchemy.orm import Session
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.db import bump_config_version
from shared.models import ApiKey, UsageRecord
from tests.proxy.conftest import CLIENT_KEY, SERVER_KEY, Gateway
from tests.support.fake_upstream import DEFAULT_REPLY, Scenario
from tests.support.seed import add_key

pytestmark = pytest.mark.db

TIMEOUT_S = 10.0
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
SLOW = Scenario(first_chunk_pause_s=5.0)  # one delta, then a long pause: time to cancel or close


# --- client helpers -----------------------------------------------------------


def open_ws(base_url: str, headers: Mapping[str, str] | None = None, query: str = "") -> Any:
    """`async with open_ws(...) as ws:` a connection to the proxy's /ws/chat."""
    url = base_url.replace("http://", "ws://", 1) + "/ws/chat" + (f"?{query}" if query else "")
    return connect(url, additional_headers=dict(headers or {}), open_timeout=TIMEOUT_S, close_timeout=TIMEOUT_S)


def chat(chat_id: Any, model: str = "gpt-4o-mini", **params: Any) -> dict[str, Any]:
    """A chat message."""
    return {"type": "chat", "id": chat_id, "model": model, "messages": MESSAGES, **params}


async def send(ws: ClientConnection, message: Any) -> None:
    """Send one JSON message."""
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next server message (bounded wait)."""
    message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
    assert isinstance(message, dict)
    return message


async def _until(ws: ClientConnection, kinds: tuple[str, ...], chat_ids: tuple[Any, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pending = set(chat_ids)
    async with asyncio.timeout(TIMEOUT_S):
        while pending:
            message = await recv(ws)
            out.append(message)
            if message["type"] in kinds:
                pending.discard(message.get("id"))
    return out


async def until_end(ws: ClientConnection, *chat_ids: Any) -> list[dict[str, Any]]:
    """Every message until each of `chat_ids` has had its `done` or `error`."""
    return await _until(ws, ("done", "error"), chat_ids)


async def until_delta(ws: ClientConnection, *chat_ids: Any) -> list[dict[str, Any]]:
    """Every message until each of `chat_ids` has had a `delta`."""
    return await _until(ws, ("delta",), chat_ids)


def of(messages: list[dict[str, Any]], chat_id: Any, kind: str | None = None) -> list[dict[str, Any]]:
    """The messages about `chat_id`, of one `type` if given."""
    return [m for m in messages if m.get("id") == chat_id and (kind is None or m["type"] == kind)]


def text_of(messages: list[dict[str, Any]], chat_id: Any) -> str:
    """The reply of `chat_id` re-assembled from its deltas."""
    return "".join(m.get("content", "") for m in of(messages, chat_id, "delta"))


async def expect_close(ws: ClientConnection) -> int | None:
    """Wait for the server to close the socket; its close code."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                await ws.recv()
    return ws.close_code


async def rows(gw: Gateway, n: int) -> list[UsageRecord]:
    """The usage rows once at least `n` exist (bounded)."""
    return await asyncio.to_thread(gw.wait_rows, n)


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll `predicate` until true (bounded)."""
    async with asyncio.timeout(TIMEOUT_S):
        while not predicate():
            await asyncio.sleep(0.02)


def assert_error(message: dict[str, Any], status: int, code: str | None, chat_id: Any = None) -> None:
    """`message` is an error of that status and code, with OpenAI's error object."""
    assert message["type"] == "error", message
    assert message["id"] == chat_id and message["status"] == status
    assert set(message["error"]) == {"message", "type", "param", "code"}
    assert message["error"]["code"] == code, message


# --- auth -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query"),
    [({"Authorization": f"Bearer {CLIENT_KEY}"}, ""), ({"X-API-Key": CLIENT_KEY}, ""), ({}, f"api_key={CLIENT_KEY}")],
    ids=["bearer", "x-api-key", "query"],
)
async def test_auth_by_header_or_query(gateway: Gateway, headers: dict[str, str], query: str) -> None:
    async with open_ws(gateway.url, headers, query) as ws:
        await send(ws, chat("c1"))
        messages = await until_end(ws, "c1")
    assert messages[-1]["type"] == "done"


async def test_auth_by_first_message(gateway: Gateway) -> None:
    async with open_ws(gateway.url) as ws:
        await send(ws, {"type": "auth", "api_key": CLIENT_KEY})
        await send(ws, chat("c1"))
        messages = await until_end(ws, "c1")
        assert messages[-1]["type"] == "done"
        await send(ws, {"type": "auth", "api_key": CLIENT_KEY})
        assert_error(await recv(ws), 400, "already_authenticated")


@pytest.mark.parametrize("how", ["header", "query", "message"])
async def test_bad_key_gets_error_then_4401(gateway: Gateway, how: str) -> None:
    bad = "nx-not-a-real-key-00000000"
    headers = {"Authorization": f"Bearer {bad}"} if how == "header" else {}
    async with open_ws(gateway.url, headers, f"api_key={bad}" if how == "query" else "") as ws:
        if how == "message":
            await send(ws, {"type": "auth", "api_key": bad})
        assert_error(await recv(ws), 401, "invalid_api_key")
        assert await expect_close(ws) == 4401
    assert gateway.upstream.chat_requests() == []


async def test_missing_auth_message_times_out(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(ws_auth_timeout_s=0.3)
    async with open_ws(gw.url) as ws:
        message = await recv(ws)
        assert_error(message, 401, "invalid_api_key")
        assert "auth" in message["error"]["message"]
        assert await expect_close(ws) == 4401


async def test_first_message_other_than_auth_is_refused(gateway: Gateway) -> None:
    async with open_ws(gateway.url) as ws:
        await send(ws, chat("c1"))
        assert_error(await recv(ws), 401, "invalid_api_key")
        assert await expect_close(ws) == 4401
    assert gateway.upstream.chat_requests() == []


async def test_revoked_key_stops_working_on_an_open_socket(gateway: Gateway) -> None:
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1"))
        assert (await until_end(ws, "c1"))[-1]["type"] == "done"
        with Session(gateway.engine) as s, s.begin():
            s.execute(update(ApiKey).values(enabled=False))
            bump_config_version(s)
        await asyncio.sleep(0.6)  # > the poll interval: the snapshot sees the change
        await send(ws, chat("c2"))
        assert_error(await recv(ws), 401, "key_disabled", "c2")
    assert len(gateway.upstream.chat_requests()) == 1


def test_plain_get_is_told_to_upgrade(gateway: Gateway) -> None:
    r = requests.get(gateway.url + "/ws/chat", timeout=10)
    assert r.status_code == 426
    assert r.json()["error"]["code"] == "upgrade_required"


# --- chats ----------------------------------------------------------------------


async def test_one_chat_streams_start_deltas_usage_done(gateway: Gateway) -> None:
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1", temperature=0.3, stream=False))
        messages = await until_end(ws, "c1")
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "start" and kinds[-2:] == ["usage", "done"]
    assert set(kinds[1:-2]) == {"delta"} and len(kinds) - 3 >= 2
    assert all(m["id"] == "c1" for m in messages)
    start, usage, done = messages[0], messages[-2], messages[-1]
    assert start["request_id"].startswith("req_") and start["conversation_id"].startswith("conv_")
    assert start["model"] == "gpt-4o-mini"
    assert text_of(messages, "c1") == DEFAULT_REPLY
    assert usage["usage"] == {"prompt_tokens": 17, "completion_tokens": 7, "total_tokens": 24}
    assert usage["token_source"] == "upstream" and usage["cost_usd"] == pytest.approx(0.00000675)
    assert done["finish_reason"] == "stop"

    seen = gateway.upstream.chat_requests()[-1]
    assert seen.body["stream"] is True and seen.body["stream_options"] == {"include_usage": True}
    assert seen.body["temperature"] == 0.3 and seen.body["messages"] == MESSAGES
    assert not {"type", "id", "conversation_id"} & set(seen.body)
    assert seen.headers["Authorization"] == f"Bearer {SERVER_KEY}"

    (row,) = await rows(gateway, 1)
    assert (row.transport, row.stream, row.status_code, row.total_tokens) == ("ws", True, 200, 24)
    assert row.request_id == start["request_id"] and row.conversation_id == start["conversation_id"]
    assert row.ttft_ms is not None and row.error_type is None


async def test_two_chats_interleave_on_one_socket(gateway: Gateway) -> None:
    replies = {"gpt-4o-mini": "a1 a2 a3 a4 a5 a6", "gpt-3.5-turbo": "b1 b2 b3 b4 b5 b6"}
    for model, reply in replies.items():
        gateway.upstream.scenarios[model] = Scenario(reply=reply, chunk_delay_s=0.05)
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("a", "gpt-4o-mini"))
        await send(ws, chat(2, "gpt-3.5-turbo"))
        messages = await until_end(ws, "a", 2)
    assert text_of(messages, "a") == replies["gpt-4o-mini"]
    assert text_of(messages, 2) == replies["gpt-3.5-turbo"]
    order = [m["id"] for m in messages if m["type"] == "delta"]
    assert order.index(2) < len(order) - 1 - order[::-1].index("a"), order  # b started before a ended
    starts = {m["id"]: m for m in messages if m["type"] == "start"}
    assert starts["a"]["request_id"] != starts[2]["request_id"]
    assert starts["a"]["conversation_id"] == starts[2]["conversation_id"]  # one conversation per socket
    assert {m["id"] for m in messages if m["type"] == "done"} == {"a", 2}
    assert sorted(r.model for r in await rows(gateway, 2)) == ["gpt-3.5-turbo", "gpt-4o-mini"]


async def test_conversation_id_per_socket_unless_given(gateway: Gateway) -> None:
    async with open_ws(gateway.url, gateway.headers()) as ws:
        for chat_id in ("t1", "t2"):
            await send(ws, chat(chat_id))
            await until_end(ws, chat_id)
        await send(ws, chat("t3", conversation_id="conv-mine"))
        third = await until_end(ws, "t3")
    async with open_ws(gateway.url, gateway.headers()) as other:
        await send(other, chat("t1"))
        fourth = await until_end(other, "t1")
    found = {r.request_id: r.conversation_id for r in await rows(gateway, 4)}
    ids = list(found.values())
    assert ids[0] == ids[1] and ids[0].startswith("conv_")
    assert of(third, "t3", "start")[0]["conversation_id"] == "conv-mine" == ids[2]
    assert of(fourth, "t1", "start")[0]["conversation_id"] == ids[3] != ids[0]
    assert "conversation_id" not in gateway.upstream.chat_requests()[2].body


async def test_cancel_stops_deltas_and_records_499(gateway: Gateway) -> None:
    gateway.upstream.default = SLOW
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1"))
        before = await until_delta(ws, "c1")
        await send(ws, {"type": "cancel", "id": "c1"})
        after = await until_end(ws, "c1")
        assert [m["type"] for m in after] == ["usage", "done"]
        assert after[-1]["finish_reason"] == "cancelled"
        assert after[0]["usage"]["completion_tokens"] >= 1
        await send(ws, {"type": "ping", "id": "p"})
        assert await recv(ws) == {"type": "pong", "id": "p"}  # nothing more came for c1
        await send(ws, {"type": "cancel", "id": "c1"})
        assert_error(await recv(ws), 400, "unknown_id", "c1")
    assert text_of(before, "c1") == SLOW.pieces()[0]
    (row,) = await rows(gateway, 1)
    assert (row.status_code, row.error_type, row.transport) == (499, "client_cancelled", "ws")
    assert row.token_source == "estimated" and row.completion_tokens >= 1
    await wait_for(lambda: gateway.upstream.cancelled == 1 and gateway.upstream.in_flight == 0)


async def test_socket_closing_cancels_and_records_in_flight(gateway: Gateway) -> None:
    gateway.upstream.default = SLOW
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1"))
        await send(ws, chat("c2"))
        await until_delta(ws, "c1", "c2")
    found = await rows(gateway, 2)
    assert [(r.status_code, r.error_type) for r in found] == [(499, "client_closed")] * 2
    await wait_for(lambda: gateway.upstream.cancelled == 2 and gateway.upstream.in_flight == 0)


@pytest.mark.parametrize(
    ("frame", "status", "code"),
    [
        ("{not json", 400, "invalid_json"),
        (b"\x00\x01binary", 400, "unsupported_frame"),
        (json.dumps({"type": "shout", "id": "x"}), 400, "unknown_message_type"),
        (json.dumps([1, 2]), 400, None),
        (json.dumps({"type": "chat", "model": "gpt-4o-mini", "messages": MESSAGES}), 400, None),
        (json.dumps({"type": "chat", "id": "x", "messages": MESSAGES}), 400, None),
        (json.dumps({"type": "chat", "id": "x", "model": "gpt-4o-mini", "messages": []}), 400, None),
        (json.dumps({"type": "chat", "id": "x", "model": "no-such-model", "messages": MESSAGES}), 404,
         "model_not_found"),
        (json.dumps({"type": "cancel", "id": "nothing"}), 400, "unknown_id"),
    ],
    ids=["bad-json", "binary", "unknown-type", "not-object", "no-id", "no-model", "no-messages", "unknown-model",
         "cancel-unknown"],
)
async def test_bad_input_gets_error_and_socket_keeps_serving(
    gateway: Gateway, frame: str | bytes, status: int, code: str | None
) -> None:
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await ws.send(frame)
        message = await recv(ws)
        assert message["type"] == "error" and message["status"] == status, message
        assert set(message["error"]) == {"message", "type", "param", "code"}
        if code is not None:
            assert message["error"]["code"] == code
        await send(ws, chat("after"))
        assert text_of(await until_end(ws, "after"), "after") == DEFAULT_REPLY
    assert len(gateway.upstream.chat_requests()) == 1
    assert len(await rows(gateway, 1)) == 1  # refused messages are not usage


async def test_bad_message_does_not_disturb_a_chat_in_flight(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(chunk_delay_s=0.05)
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1"))
        await until_delta(ws, "c1")
        await ws.send("garbage")
        await ws.send(b"\xff")
        messages = await until_end(ws, "c1")
    assert len([m for m in messages if m["type"] == "error"]) == 2
    assert messages[-1]["type"] == "done"
    assert DEFAULT_REPLY.endswith(text_of(messages, "c1"))


async def test_duplicate_in_flight_id_is_refused(gateway: Gateway) -> None:
    gateway.upstream.default = SLOW
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("same"))
        await until_delta(ws, "same")
        await send(ws, chat("same"))
        assert_error(await recv(ws), 400, "duplicate_id", "same")
        await send(ws, {"type": "cancel", "id": "same"})
        assert (await until_end(ws, "same"))[-1]["finish_reason"] == "cancelled"
    assert len(gateway.upstream.chat_requests()) == 1


async def test_concurrency_bound_per_socket(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(ws_max_concurrent_chats=2)
    gw.upstream.default = Scenario(first_chunk_pause_s=0.3)
    async with open_ws(gw.url, gw.headers()) as ws:
        for chat_id in ("c1", "c2", "c3"):
            await send(ws, chat(chat_id))
        messages = await until_end(ws, "c1", "c2", "c3")
        assert_error(of(messages, "c3")[0], 429, "too_many_concurrent_chats", "c3")
        assert of(messages, "c1")[-1]["type"] == of(messages, "c2")[-1]["type"] == "done"
        await send(ws, chat("c3"))  # room again once the others are done
        assert (await until_end(ws, "c3"))[-1]["type"] == "done"
    assert gw.upstream.max_in_flight == 2


async def test_oversize_message_gets_error_and_socket_stays_open(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(ws_max_message_bytes=2048)
    async with open_ws(gw.url, gw.headers()) as ws:
        await send(ws, {**chat("big"), "messages": [{"role": "user", "content": "x" * 3000}]})
        assert_error(await recv(ws), 413, "request_too_large")
        # Under the limit in characters, over it in UTF-8 bytes.
        await ws.send(json.dumps({**chat("big"), "messages": [{"role": "user", "content": "é" * 1500}]},
                                 ensure_ascii=False))
        assert_error(await recv(ws), 413, "request_too_large")
        await send(ws, chat("small"))
        assert (await until_end(ws, "small"))[-1]["type"] == "done"
    assert len(gw.upstream.chat_requests()) == 1


async def test_upstream_error_passes_through(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(status=429, error_body={"error": {
        "message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limited"}})
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1"))
        messages = await until_end(ws, "c1")
    assert [m["type"] for m in messages] == ["start", "error"]
    assert_error(messages[-1], 429, "rate_limited", "c1")
    assert messages[-1]["error"]["message"] == "slow down"
    assert messages[-1]["request_id"] == messages[0]["request_id"]
    (row,) = await rows(gateway, 1)
    assert (row.status_code, row.error_type, row.total_tokens) == (429, "upstream_error", 0)


async def test_upstream_breaking_mid_stream_is_an_error(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(break_after_chunks=2)
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1"))
        messages = await until_end(ws, "c1")
    assert_error(messages[-1], 502, "upstream_unreachable", "c1")
    assert text_of(messages, "c1") == "".join(Scenario().pieces()[:2])
    (row,) = await rows(gateway, 1)
    assert row.status_code == 502 and row.completion_tokens >= 1


# --- same records as HTTP ------------------------------------------------------------------


def _archive(root: Path) -> dict[str, dict[str, Any]]:
    return {
        line["conversation_id"]: line
        for path in root.rglob("*.jsonl")
        for line in map(json.loads, path.read_text().splitlines())
    }


async def test_ws_turn_is_recorded_exactly_like_an_http_stream(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(archive_messages=True)
    params = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.5}
    r = await asyncio.to_thread(
        requests.post, gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
        json={**params, "stream": True, "conversation_id": "conv-http"},
    )
    assert r.status_code == 200
    async with open_ws(gw.url, gw.headers()) as ws:
        await send(ws, {"type": "chat", "id": "w", **params, "conversation_id": "conv-ws"})
        await until_end(ws, "w")
    await asyncio.to_thread(gw.proxy.stop)  # flushes usage and archive

    http_row, ws_row = await rows(gw, 2)
    per_request = {"id", "request_id", "conversation_id", "transport", "api", "latency_ms", "ttft_ms", "created_at"}
    for column in UsageRecord.__table__.columns.keys():
        h, w = getattr(http_row, column), getattr(ws_row, column)
        assert (h is None) == (w is None), column
        if column not in per_request:
            assert h == w, column
    assert (http_row.transport, ws_row.transport) == ("http", "ws")
    assert (http_row.api, ws_row.api) == ("chat", "ws")

    lines = _archive(gw.settings.messages_dir)
    http_line, ws_line = lines["conv-http"], lines["conv-ws"]
    assert set(http_line) == set(ws_line)
    per_line = {"request_id", "conversation_id", "transport", "created_at", "latency_ms", "ttft_ms"}
    assert {k: v for k, v in http_line.items() if k not in per_line} == {
        k: v for k, v in ws_line.items() if k not in per_line}
    assert ws_line["reply"]["content"] == DEFAULT_REPLY and ws_line["transport"] == "ws"
    assert CLIENT_KEY not in json.dumps(ws_line) and SERVER_KEY not in json.dumps(ws_line)


# --- shutdown -----------------------------------------------------------------------------


async def test_shutdown_flushes_in_flight_usage_then_closes_1001(gateway: Gateway) -> None:
    gateway.upstream.default = SLOW
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1"))
        await until_delta(ws, "c1")
        stopping = asyncio.create_task(asyncio.to_thread(gateway.proxy.stop))
        message = await recv(ws)
        assert_error(message, 503, "server_shutting_down", "c1")
        assert await expect_close(ws) == 1001
        # Flushed before the close frame went out, not merely queued.
        (row,) = await asyncio.to_thread(gateway.usage_rows)
        await stopping
    assert (row.status_code, row.error_type, row.transport) == (503, "server_shutdown", "ws")
    assert row.request_id == message["request_id"] and row.completion_tokens >= 1


# --- limits -------------------------------------------------------------------------------


async def test_key_limits_are_shared_with_http(gateway: Gateway) -> None:
    limited_key = "nx-ws-limited-key-000000000000"
    add_key(gateway.engine, limited_key, max_concurrency=1)
    await asyncio.sleep(0.6)  # > the poll interval: the snapshot has the key
    gateway.upstream.default = SLOW
    headers = {"Authorization": f"Bearer {limited_key}"}
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    async with open_ws(gateway.url, headers) as ws:
        await send(ws, chat("c1"))
        await until_delta(ws, "c1")
        r = await asyncio.to_thread(requests.post, gateway.url + "/v1/chat/completions", json=body,
                                    headers=headers, timeout=10)
        assert r.status_code == 429 and r.json()["error"]["code"] == "concurrency_limit_exceeded"
        await send(ws, chat("c2"))
        message = await recv(ws)
        assert_error(message, 429, "concurrency_limit_exceeded", "c2")
        assert message["retry_after"] >= 1
        await send(ws, {"type": "cancel", "id": "c1"})
        await until_end(ws, "c1")
    gateway.upstream.default = Scenario()
    r = await asyncio.to_thread(requests.post, gateway.url + "/v1/chat/completions", json=body,
                                headers=headers, timeout=10)
    assert r.status_code == 200  # the cancelled turn gave its slot back


async def test_an_upstream_error_event_mid_stream_is_an_error_not_a_done(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(error_after_chunks=2, report_usage=False)
    async with open_ws(gateway.url, gateway.headers()) as ws:
        await send(ws, chat("c1"))
        messages = await until_end(ws, "c1")
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "start" and "delta" in kinds and kinds[-1] == "error" and "done" not in kinds
    assert messages[-1]["error"]["message"] == "model overloaded mid-stream"
    (row,) = await rows(gateway, 1)
    assert (row.status_code, row.error_type) == (502, "overloaded") and row.completion_tokens > 0
