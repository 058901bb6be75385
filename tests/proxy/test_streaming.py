"""SSE streaming: pass-through without buffering, usage chunk handling, disconnects."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import requests

from proxy_app.exchange.tokens import TokenCounter
from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import Scenario
from tests.support.raw_client import stream_until
from tests.support.seed import add_model

pytestmark = pytest.mark.db

MESSAGES = [{"role": "user", "content": "Stream me something."}]


def stream_events(gw: Gateway, body: dict) -> list[dict | str]:
    r = requests.post(gw.url + "/v1/chat/completions", json=body, headers=gw.headers(), stream=True, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["Cache-Control"] == "no-cache"
    assert r.headers["X-Accel-Buffering"] == "no"
    assert r.headers["X-Request-Id"] and r.headers["X-Conversation-Id"]
    events: list[dict | str] = []
    for line in r.iter_lines():
        if line.startswith(b"data: "):
            payload = line[6:].decode()
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def content_of(events: list[dict | str]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events if isinstance(e, dict) and e.get("choices")
    )


def test_stream_without_client_usage_hides_usage_but_records_it(gateway: Gateway) -> None:
    events = stream_events(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
    assert events[-1] == "[DONE]"
    assert content_of(events) == "Hello from the fake upstream, my friend."
    assert not any(isinstance(e, dict) and e.get("usage") for e in events)
    # The proxy asked upstream for usage anyway.
    assert gateway.upstream.chat_requests()[-1].body["stream_options"] == {"include_usage": True}
    (row,) = gateway.wait_rows(1)
    assert (row.prompt_tokens, row.completion_tokens, row.token_source, row.stream) == (17, 7, "upstream", True)
    assert row.status_code == 200 and row.ttft_ms is not None


def test_stream_with_client_usage_delivers_usage_chunk(gateway: Gateway) -> None:
    events = stream_events(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True,
                                     "stream_options": {"include_usage": True}})
    usage_chunks = [e for e in events if isinstance(e, dict) and e.get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
    assert usage_chunks[0]["usage"]["total_tokens"] == 24


def test_usage_attached_to_content_chunk_is_stripped(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(usage_in_last_content_chunk=True)
    events = stream_events(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
    assert not any(isinstance(e, dict) and e.get("usage") for e in events)
    assert any(isinstance(e, dict) and e["choices"] and e["choices"][0]["finish_reason"] == "stop" for e in events)
    (row,) = gateway.wait_rows(1)
    assert row.token_source == "upstream" and row.total_tokens == 24


def test_stream_without_upstream_usage_is_estimated(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(report_usage=False, reply="one two three four five six")
    events = stream_events(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
    assert content_of(events) == "one two three four five six"
    (row,) = gateway.wait_rows(1)
    counter = TokenCounter()
    assert row.token_source == "estimated"
    assert row.prompt_tokens == counter.count_messages(MESSAGES, "gpt-4o-mini")
    assert row.completion_tokens == counter.count_text("one two three four five six", "gpt-4o-mini")


async def test_stream_is_not_buffered(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(first_chunk_pause_s=0.5)
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(),
                                json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}) as resp:
            first_content_at = None
            async for line in resp.content:
                if b'"content": "Hello"' in line:
                    first_content_at = time.perf_counter() - started
                    break
            rest = await resp.read()
            total = time.perf_counter() - started
    assert first_content_at is not None
    assert first_content_at < 0.35, first_content_at
    assert total >= 0.5
    assert b"[DONE]" in rest


def test_client_disconnect_cancels_upstream_and_records_delivered(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(reply="alpha beta gamma delta epsilon zeta eta theta", chunk_delay_s=0.3,
                                        report_usage=False)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    stream_until(gateway.url, gateway.key, body, b"alpha")  # leave after the first content chunk
    (row,) = gateway.wait_rows(1)
    assert row.status_code == 499 and row.error_type == "client_closed"
    counter = TokenCounter()
    assert row.prompt_tokens == counter.count_messages(MESSAGES, "gpt-4o-mini")
    # At least "alpha" was delivered, and far from all eight words.
    assert counter.count_text("alpha", "gpt-4o-mini") <= row.completion_tokens
    assert row.completion_tokens < counter.count_text("alpha beta gamma delta epsilon zeta eta theta", "gpt-4o-mini")
    deadline = time.monotonic() + 5
    while gateway.upstream.cancelled < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.upstream.cancelled == 1  # the upstream call was cut, not run to the end


def test_upstream_breaking_mid_stream_is_recorded(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(break_after_chunks=2, report_usage=False)
    r = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(), stream=True, timeout=10,
                      json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
    text = r.content.decode()
    assert "Hello" in text and '"error"' in text
    (row,) = gateway.wait_rows(1)
    assert row.status_code == 502 and row.completion_tokens > 0


async def test_two_hundred_concurrent_requests_make_two_hundred_exact_rows(gateway: Gateway) -> None:
    up = gateway.upstream
    up.scenarios["gpt-3.5-turbo"] = Scenario(status=500)
    up.default = Scenario(chunk_delay_s=0.01)
    # Aborted streams are slow enough that the client really leaves mid-reply.
    add_model(gateway.engine, gateway.provider_id, "abort-model", upstream_name="abort-model")
    up.scenarios["abort-model"] = Scenario(chunk_delay_s=0.2, report_usage=False)
    await asyncio.sleep(0.6)  # the proxy picks the new model up
    counter = TokenCounter()
    aborted_prompt = counter.count_messages(MESSAGES, "abort-model")
    full_reply = counter.count_text(Scenario().reply, "abort-model")

    async def one(session: aiohttp.ClientSession, i: int) -> str:
        kind = ("json", "stream", "abort", "fail")[i % 4]
        model = {"fail": "gpt-3.5-turbo", "abort": "abort-model"}.get(kind, "gpt-4o-mini")
        body = {"model": model, "messages": MESSAGES,
                "stream": kind in ("stream", "abort")}
        async with session.post(gateway.url + "/v1/chat/completions", json=body, headers=gateway.headers()) as resp:
            if kind == "abort":
                async for line in resp.content:
                    if b'"content": "Hello"' in line:
                        resp.close()  # drop the connection mid-stream
                        break
            else:
                await resp.read()
            return resp.headers["X-Request-Id"]

    connector = aiohttp.TCPConnector(limit=200, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        ids = await asyncio.gather(*(one(session, i) for i in range(200)))
    rows = await asyncio.to_thread(gateway.wait_rows, 200, 20.0)
    assert len(rows) == 200
    by_id = {r.request_id: r for r in rows}
    assert set(by_id) == set(ids)
    for i, request_id in enumerate(ids):
        row = by_id[request_id]
        kind = ("json", "stream", "abort", "fail")[i % 4]
        if kind in ("json", "stream"):
            figures = (row.status_code, row.prompt_tokens, row.completion_tokens, row.token_source)
            assert figures == (200, 17, 7, "upstream")
        elif kind == "fail":
            assert (row.status_code, row.total_tokens) == (500, 0)
        else:
            # Billed for what was written before the disconnect was seen: at least "Hello", not all.
            assert (row.status_code, row.token_source) == (499, "estimated")
            assert row.prompt_tokens == aborted_prompt and 1 <= row.completion_tokens < full_reply


def test_client_hanging_up_right_after_done_is_a_completed_request(gateway: Gateway) -> None:
    # The upstream keeps its connection open a while after [DONE]; the client leaves at [DONE].
    gateway.upstream.default = Scenario(linger_after_done_s=2.0)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    assert b"[DONE]" in stream_until(gateway.url, gateway.key, body, b"[DONE]")
    (row,) = gateway.wait_rows(1)
    assert (row.status_code, row.error_type, row.total_tokens, row.token_source) == (200, None, 24, "upstream")


def test_an_upstream_error_event_mid_stream_is_recorded_as_an_error(gateway: Gateway) -> None:
    # Over HTTP the status line (200) is gone by then: the client gets the error as the stream's
    # last event, and the row says what happened, so success rates do not count it as a success.
    gateway.upstream.default = Scenario(error_after_chunks=2, report_usage=False)
    events = stream_events(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
    assert content_of(events) == "Hello from"
    last = events[-1]
    assert isinstance(last, dict) and last["error"]["message"] == "model overloaded mid-stream"
    assert last["error"]["code"] == "overloaded" and "[DONE]" not in events
    (row,) = gateway.wait_rows(1)
    assert (row.status_code, row.error_type) == (502, "overloaded")
    assert row.completion_tokens > 0 and row.token_source == "estimated"
