"""Proxy edge cases found in review: bad header bytes, hang-ups while recording, quota changes, headers."""

from __future__ import annotations

import json
import random
import socket
import string
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import requests
from sqlalchemy import update
from sqlalchemy.orm import Session

from proxy_app.app_keys import STATE
from proxy_app.config import KeyCfg
from proxy_app.errors import ProxyError
from proxy_app.governance import MemoryLimiter as Limiter
from shared.db import bump_config_version
from shared.models import ApiKey, UsageRecord
from shared.secrets import hash_key, key_hint
from tests.proxy.conftest import SERVER_KEY, Gateway
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_key

pytestmark = pytest.mark.db

MESSAGES = [{"role": "user", "content": "review"}]


def _post(gw: Gateway, key: str | None = None, **extra: object) -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(key), timeout=10,
                         json={"model": "gpt-4o-mini", "messages": MESSAGES, **extra})


def _raw_post(gw: Gateway, extra_headers: bytes, body: dict) -> bytes:
    """POST with raw header bytes (bytes a header may carry that `requests` would not send)."""
    host, port = gw.url.split("//")[1].split(":")
    payload = json.dumps(body).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           + extra_headers + b"Connection: close\r\nContent-Length: " + str(len(payload)).encode()
           + b"\r\n\r\n" + payload)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(req)
        data = b""
        for _ in range(10_000):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _wait_key(gw: Gateway, key: str) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if requests.get(gw.url + "/v1/models", headers=gw.headers(key), timeout=5).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("key never became visible to the proxy")


# --- usage accounting -------------------------------------------------------


def test_non_utf8_conversation_header_is_refused_and_never_blocks_usage(gateway: Gateway) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    auth = b"Authorization: Bearer " + gateway.key.encode() + b"\r\n"
    first = _raw_post(gateway, auth + b"X-Conversation-Id: conv-\xff\r\n", body)
    assert first.startswith(b"HTTP/1.1 400") and b"conversation_id" in first
    assert gateway.upstream.chat_requests() == []
    assert _post(gateway).status_code == 200  # an ordinary request afterwards is recorded
    rows = gateway.flushed_rows()
    assert len(rows) == 1 and rows[0].status_code == 200


def test_stream_row_lost_when_client_closes_during_final_count(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(report_usage=False)  # proxy must count with tiktoken
    # ~0.9 MB (under the fake upstream's 1 MiB body cap) of one long "word": tiktoken needs ~0.5 s for it,
    # in a worker thread (finish() offloads counts over 50k chars).
    big = "".join(random.Random(1).choices(string.ascii_lowercase, k=900_000))
    r = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(), timeout=30, stream=True,
                      json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": big}]})
    assert r.status_code == 200
    for line in r.iter_lines():
        if line == b"data: [DONE]":
            break
    r.close()  # the client has the whole reply and hangs up, as clients do
    rows = gateway.wait_rows(1, timeout=20)  # counting 0.9 MB takes a while on a busy machine
    assert len(rows) == 1 and rows[0].status_code == 200


# --- key limits ---------------------------------------------------------------


def test_quota_period_change_forgets_recorded_consumption(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway()
    raw = "nx-review-quota-key-00000000000000"
    now = datetime.now(timezone.utc)
    with Session(engine) as s, s.begin():
        key = ApiKey(name="quota", key_hash=hash_key(raw), key_hint=key_hint(raw), token_quota=100,
                     quota_period="total")
        s.add(key)
        s.flush()
        # 1000 tokens already used this month (and so in total) by this key.
        s.add(UsageRecord(request_id="req_review_old", key_id=key.id, model="gpt-4o-mini", status_code=200,
                          prompt_tokens=500, completion_tokens=500, total_tokens=1000, cost_usd=Decimal(0),
                          created_at=now))
        bump_config_version(s)
        key_id = key.id
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _post(gw, raw).status_code == 401:
        time.sleep(0.05)
    assert _post(gw, raw).status_code == 429  # 1000 of 100 tokens used: refused
    with Session(engine) as s, s.begin():
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(quota_period="monthly"))
        bump_config_version(s)
    snapshot_has = lambda: any(k.id == key_id and k.quota_period == "monthly"  # noqa: E731
                               for k in gw.proxy.app[STATE].config.snapshot.keys_by_hash.values())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not snapshot_has():
        time.sleep(0.05)
    assert snapshot_has()
    # This month's usage is still 1000 tokens: the key must stay refused.
    assert _post(gw, raw).status_code == 429


def test_daily_seed_applied_after_midnight() -> None:
    day = datetime(2026, 3, 10, 23, 59, tzinfo=timezone.utc)
    clock_now = [day.timestamp()]
    limiter = Limiter(clock=lambda: clock_now[0])
    # The snapshot loaded at 23:59 says the key used 1000 tokens today.
    limiter.seed({7: ("daily", datetime(2026, 3, 10, tzinfo=timezone.utc).timestamp(), 1000, Decimal(0))})
    key = KeyCfg(id=7, name="k", hint="nx-…0007", provider_ids=frozenset(), models=frozenset(), enabled=True,
                 expires_at=None, archive_messages=None, token_quota=500, quota_period="daily")
    clock_now[0] = (day + timedelta(minutes=2)).timestamp()  # first request at 00:01 the next day
    try:
        limiter.admit_now(key, 10, Decimal(0))
    except ProxyError as exc:
        pytest.fail(f"refused on a fresh day by yesterday's usage: {exc.message}")


# --- headers --------------------------------------------------------------------


def test_upstream_ratelimit_header_overrides_key_limit(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    original = upstream._answer

    async def with_account_limits(request, body):  # type: ignore[no-untyped-def]
        resp = await original(request, body)
        if not resp.prepared:
            resp.headers["x-ratelimit-limit-requests"] = "10000"  # the provider account's limit
        return resp

    upstream._answer = with_account_limits
    gw = make_gateway()
    raw = "nx-review-rpm-key-000000000000000"
    add_key(engine, raw, rpm=5)
    _wait_key(gw, raw)
    r = _post(gw, raw)
    assert r.status_code == 200
    assert r.headers["X-RateLimit-Limit"] == "5"
    assert r.headers["x-ratelimit-limit-requests"] == "5"


def test_limit_refusal_has_request_id(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway()
    raw = "nx-review-rpm1-key-00000000000000"
    add_key(engine, raw, rpm=1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _post(gw, raw).status_code == 401:
        time.sleep(0.05)
    r = _post(gw, raw)
    assert r.status_code == 429
    assert "X-Request-Id" in r.headers and "X-Conversation-Id" in r.headers


def test_request_cost_header_is_plain_decimal(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(prompt_tokens=2, completion_tokens=1)  # 2*0.15 + 1*0.60 per 1M
    r = _post(gateway)
    assert r.status_code == 200
    assert Decimal(r.headers["X-Request-Cost"]) == Decimal("0.0000009")
    assert "E" not in r.headers["X-Request-Cost"].upper()


# --- bad input and secrets ---------------------------------------------------------


def test_non_utf8_key_is_401_not_500(gateway: Gateway) -> None:
    data = _raw_post(gateway, b"Authorization: Bearer nx-\xff\xfe-key\r\n",
                     {"model": "gpt-4o-mini", "messages": MESSAGES})
    assert data.startswith(b"HTTP/1.1 401"), data[:200]


def test_upstream_error_echoing_server_key_is_not_passed_on(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(status=401, error_body={"error": {
        "message": f"Incorrect API key provided: {SERVER_KEY}.", "type": "invalid_request_error",
        "param": None, "code": "invalid_api_key"}})
    r = _post(gateway)
    assert r.status_code == 401
    assert SERVER_KEY not in r.text
