"""Failover across providers serving the same model."""

from __future__ import annotations

import time

import pytest
import requests

from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

MESSAGES = [{"role": "user", "content": "hi"}]


def _two_providers(make_gateway, engine, first_url: str, second: FakeUpstream) -> Gateway:  # type: ignore[no-untyped-def]
    gw = make_gateway(seed=False)
    a = add_provider(engine, "primary", first_url, priority=10)
    b = add_provider(engine, "secondary", second.base_url, priority=0)
    add_model(engine, a, "shared-model")
    add_model(engine, b, "shared-model")
    add_key(engine, gw.key)
    time.sleep(0.6)
    return gw


@pytest.mark.parametrize("stream", [False, True])
def test_first_provider_down_every_request_succeeds_through_second(make_gateway, engine, upstream, stream) -> None:  # type: ignore[no-untyped-def]
    gw = _two_providers(make_gateway, engine, "http://127.0.0.1:9/v1", upstream)
    for _ in range(10):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": MESSAGES, "stream": stream})
        assert r.status_code == 200
        assert "Hello" in r.text
    rows = gw.wait_rows(10)
    assert len(rows) == 10 and {r.provider_name for r in rows} == {"secondary"}
    assert len(upstream.chat_requests()) == 10  # exactly one upstream request per client request


def test_5xx_and_429_fail_over_but_4xx_does_not(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    failing = FakeUpstream(default=Scenario(status=503)).start()
    try:
        gw = _two_providers(make_gateway, engine, failing.base_url, upstream)
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": MESSAGES})
        assert r.status_code == 200
        failing.default = Scenario(status=429)
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": MESSAGES})
        assert r.status_code == 200
        failing.default = Scenario(status=400)
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": MESSAGES})
        assert r.status_code == 400  # a client error is the client's, not a reason to retry elsewhere
        assert len(failing.chat_requests()) == 3 and len(upstream.chat_requests()) == 2
        rows = gw.wait_rows(3)
        assert [(x.provider_name, x.status_code) for x in rows] == [
            ("secondary", 200), ("secondary", 200), ("primary", 400),
        ]
    finally:
        failing.stop()


def test_all_candidates_failing_returns_last_answer(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.default = Scenario(status=500)
    gw = _two_providers(make_gateway, engine, "http://127.0.0.1:9/v1", upstream)
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                      json={"model": "shared-model", "messages": MESSAGES})
    assert r.status_code == 500
    (row,) = gw.wait_rows(1)
    assert row.status_code == 500 and row.provider_name == "secondary"


def test_a_failure_is_recorded_against_the_last_provider_tried(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(seed=False)
    first = add_provider(engine, "first-dead", "http://127.0.0.1:9/v1", priority=10)
    last = add_provider(engine, "last-dead", "http://127.0.0.1:9/v2", priority=0)
    add_model(engine, first, "shared-model")
    add_model(engine, last, "shared-model")
    add_key(engine, gw.key)
    time.sleep(0.6)
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                      json={"model": "shared-model", "messages": MESSAGES})
    assert r.status_code == 502
    (row,) = gw.wait_rows(1)
    assert (row.provider_name, row.status_code, row.error_type) == ("last-dead", 502, "upstream_unreachable")


def test_a_provider_that_does_not_serve_the_api_is_no_candidate(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    other = FakeUpstream().start()
    try:
        gw = make_gateway(seed=False)
        embeddings_only = add_provider(engine, "embedder", other.base_url, priority=10, apis=["embeddings"])
        chat = add_provider(engine, "chatter", upstream.base_url, priority=0)
        add_model(engine, embeddings_only, "shared-model")
        add_model(engine, chat, "shared-model")
        add_model(engine, embeddings_only, "embed-only-model")
        add_key(engine, gw.key)
        time.sleep(0.6)
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": MESSAGES})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("Hello")
        assert other.chat_requests() == []  # never tried, although its priority is higher
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "embed-only-model", "messages": MESSAGES})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert "serves the chat API" in r.json()["error"]["message"]
    finally:
        other.stop()


def test_a_connect_timeout_is_told_from_a_slow_answer(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    # A TLS endpoint that accepts TCP and never answers the handshake: the connection never
    # completes, so the short connect timeout applies, not the provider's long timeout_s.
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        gw = make_gateway(seed=False)
        port = listener.getsockname()[1]
        silent = add_provider(engine, "silent", f"https://127.0.0.1:{port}/v1", timeout_s=30, connect_timeout_s=0.4)
        add_model(engine, silent, "silent-model")
        add_key(engine, gw.key)
        time.sleep(0.6)
        started = time.monotonic()
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=20,
                          json={"model": "silent-model", "messages": MESSAGES})
        elapsed = time.monotonic() - started
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert "did not accept a connection within 0.4 s" in r.json()["error"]["message"]
        assert elapsed < 5  # the connect timeout, not timeout_s (30 s)
        (row,) = gw.wait_rows(1)
        assert (row.status_code, row.error_type, row.provider_name) == (504, "upstream_timeout", "silent")
    finally:
        stop.set()
        thread.join(2)
        listener.close()
        for sock in held:
            sock.close()
