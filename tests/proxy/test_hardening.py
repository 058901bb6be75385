"""Abuse and bad input at the proxy's door: refused in OpenAI's shape, unbilled, keys never logged."""

from __future__ import annotations

import json
import logging
import socket
import time
import zlib
from collections.abc import Callable

import pytest
import requests

from proxy_app.fronts.json_body import MAX_JSON_DEPTH
from tests.proxy.conftest import CLIENT_KEY, Gateway

pytestmark = pytest.mark.db

MESSAGES = [{"role": "user", "content": "hi"}]


def _address(gw: Gateway) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").split(":")
    return host, int(port)


def _exchange(gw: Gateway, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes (bounded); what came back."""
    with socket.create_connection(_address(gw), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        for _ in range(1000):
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    return data


def _status_and_json(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


def _assert_nothing_billed(gw: Gateway) -> None:
    time.sleep(0.2)
    assert gw.upstream.chat_requests() == []
    assert gw.flushed_rows() == []


@pytest.mark.parametrize("bad", ["conv\u0000x", "conv\r\nSet-Cookie: a=b", "conv\nx", "conv\x7f"])
def test_control_characters_in_a_body_conversation_id_are_refused_before_the_upstream(
    gateway: Gateway, bad: str,
) -> None:
    reply = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(), timeout=10,
                          json={"model": "gpt-4o-mini", "messages": MESSAGES, "conversation_id": bad})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "conversation_id"
    _assert_nothing_billed(gateway)


def test_json_nested_past_the_limit_is_a_400_and_just_below_it_is_served(gateway: Gateway) -> None:
    def nested(depth: int) -> str:
        # `depth` levels of objects and arrays in all, the request object included.
        inner = "[" * (depth - 3) + "]" * (depth - 3)
        return ('{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi","x":' + inner + "}]}")

    for depth in (MAX_JSON_DEPTH + 1, 300, 1000):
        reply = requests.post(gateway.url + "/v1/chat/completions", data=nested(depth), timeout=10,
                              headers={**gateway.headers(), "Content-Type": "application/json"})
        assert reply.status_code == 400, depth
        assert reply.json()["error"]["code"] == "json_too_deep"
    _assert_nothing_billed(gateway)
    ok = requests.post(gateway.url + "/v1/chat/completions", data=nested(MAX_JSON_DEPTH), timeout=10,
                       headers={**gateway.headers(), "Content-Type": "application/json"})
    assert ok.status_code == 200


def test_websocket_messages_have_the_same_depth_limit(gateway: Gateway) -> None:
    import websockets.sync.client

    with websockets.sync.client.connect(gateway.url.replace("http", "ws") + "/ws/chat",
                                        additional_headers=gateway.headers()) as ws:
        ws.send('{"type":"chat","id":"1","model":"gpt-4o-mini","messages":[' + "[" * 300 + "]" * 300 + "]}")
        answer = json.loads(ws.recv(timeout=10))
        assert answer["type"] == "error" and answer["error"]["code"] == "json_too_deep"
        ws.send('{"type":"ping"}')
        assert json.loads(ws.recv(timeout=10))["type"] == "pong"  # the socket stays usable


@pytest.mark.parametrize("encoding,body", [
    ("deflate", b"\x00not deflate at all" * 4),
    ("gzip", b"\x1f\x8b\x08\x00garbage-garbage"),
    ("deflate", zlib.compress(b'{"model":"gpt-4o-mini"')[:-6]),  # truncated
])
def test_an_undecodable_body_is_a_400_in_openai_shape(gateway: Gateway, encoding: str, body: bytes) -> None:
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\nContent-Encoding: " + encoding.encode()
           + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    status, payload = _status_and_json(_exchange(gateway, raw))
    assert status == 400 and payload["error"]["type"] == "invalid_request_error"
    _assert_nothing_billed(gateway)


def test_a_huge_model_name_is_not_echoed_back_whole(gateway: Gateway) -> None:
    model = "m" * 1_000_000
    reply = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(), timeout=10,
                          json={"model": model, "messages": MESSAGES})
    assert reply.status_code == 404
    assert len(reply.text) < 2000 and "1000000 characters" in reply.json()["error"]["message"]


BAD_REQUESTS: dict[str, Callable[[str], bytes]] = {
    "control byte in Authorization": lambda key: (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\x01\r\n\r\n"),
    "undecodable query after api_key": lambda key: (
        b"GET /v1/models?api_key=" + key.encode() + b"&x=\xff HTTP/1.1\r\nHost: x\r\n\r\n"),
    "URL over 8190 bytes": lambda key: (
        b"GET /v1/models?api_key=" + key.encode() + b"&pad=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    "header over 8190 bytes": lambda key: (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"a" * 9000
        + b"\r\n\r\n"),
    "bad chunk size": lambda key: (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + key.encode() + b"\r\n0\r\n\r\n"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_parser_errors_answer_in_openai_shape_and_no_logger_sees_the_key(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, case: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    reply = _exchange(gateway, BAD_REQUESTS[case](CLIENT_KEY))
    status, payload = _status_and_json(reply)
    assert status in (400, 414, 431)
    assert payload["error"]["type"] == "invalid_request_error" and payload["error"]["message"]
    assert CLIENT_KEY.encode() not in reply
    time.sleep(0.2)
    assert caplog.records, "the refusal is logged"
    assert CLIENT_KEY not in caplog.text
    for record in caplog.records:
        assert CLIENT_KEY not in record.getMessage() and CLIENT_KEY not in str(record.exc_info)


def test_a_stalled_body_gets_408_and_the_connection_is_closed(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(proxy_body_timeout_s=0.5)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\nContent-Length: 5000\r\n\r\n")
    started = time.monotonic()
    reply = _exchange(gw, head + b'{"model": "gpt-4o-mini", "messages": [' + b" " * 40, timeout=30)
    elapsed = time.monotonic() - started
    status, payload = _status_and_json(reply)
    assert status == 408 and payload["error"]["code"] == "request_timeout"
    assert elapsed < 15  # answered at the body timeout, closed at most one lingering period later
    _assert_nothing_billed(gw)


def test_a_connection_that_sends_no_request_is_closed_at_the_header_timeout(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(proxy_header_timeout_s=1.0)
    with socket.create_connection(_address(gw), timeout=10) as idle, \
            socket.create_connection(_address(gw), timeout=10) as slow:
        slow.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        started = time.monotonic()
        assert idle.recv(100) == b""
        assert slow.recv(100) == b""
        assert 0.5 < time.monotonic() - started < 5
    # A connection that finished its headers in time is served as usual.
    assert requests.get(gw.url + "/v1/models", headers=gw.headers(), timeout=10).status_code == 200


def test_idle_connections_make_room_and_busy_ones_past_the_cap_get_a_503(
    make_gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture,
) -> None:
    gw = make_gateway(proxy_max_connections=20)
    idle = [socket.create_connection(_address(gw), timeout=10) for _ in range(40)]
    try:
        # Forty idle sockets against a cap of twenty: the oldest idle ones were closed for new ones,
        # and a real client still gets through.
        for _ in range(5):
            assert requests.get(gw.url + "/v1/models", headers=gw.headers(), timeout=10).status_code == 200
        assert idle[0].recv(100) == b""
    finally:
        for sock in idle:
            sock.close()
    # Now twenty connections each with a request in flight: the next connection is refused clearly.
    gw.upstream.scenario("gpt-4o-mini").delay_s = 3.0
    busy = []
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        for _ in range(20):
            sock = socket.create_connection(_address(gw), timeout=10)
            sock.sendall(request)
            busy.append(sock)
        deadline = time.monotonic() + 15
        while gw.upstream.in_flight < 20 and time.monotonic() < deadline:
            time.sleep(0.02)  # every request has reached the upstream: none of them is idle
        assert gw.upstream.in_flight == 20
        status, payload = _status_and_json(_exchange(gw, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert status == 503 and payload["error"]["code"] == "too_many_connections"
        assert "connection cap reached" in caplog.text
    finally:
        for sock in busy:
            sock.close()
