"""The upstream HTTP/1.1 client against real loopback sockets: framing, pooling, timeouts, TLS and proxies.

Every server here is scripted byte by byte (tests/support/http_servers.py), so each test controls exactly
what reaches the client and when. Every wait is bounded by `within()`, which fails the test instead of
raising TimeoutError, so a hanging client is never mistaken for a client that timed out on purpose.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from proxy_app.transport.http import (
    UpstreamClient,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamHTTPError,
    UpstreamPayloadError,
    UpstreamResponse,
)
from tests.support.http_servers import (
    MAX_MESSAGES,
    Conn,
    ForwardProxy,
    LoopbackTLS,
    Request,
    ScriptedServer,
    chunk,
    chunked,
    keep_alive,
    loopback_tls,
    response,
)

T = TypeVar("T")
LIMIT_S = 5.0  # bound on any single step; the client's own timeouts in these tests are 0.1-0.3 s

CHUNKED_WIRE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE;name=\"quoted\"\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: yes\r\n\r\n"
)
CHUNKED_BODY = b"Wikipedia in\r\n\r\nchunks."
PLAIN = b"hello, compressed world " * 200


async def within(aw: Awaitable[T], limit: float = LIMIT_S) -> T:
    """Await `aw`, failing the test (not raising TimeoutError) if it takes longer than `limit` seconds."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        pytest.fail(f"no result within {limit} s")
    return task.result()


async def fetch(client: UpstreamClient, url: str, method: str = "GET", **kw: Any) -> tuple[UpstreamResponse, bytes]:
    """One request, its whole body, then release()."""
    resp = await client.request(method, url, **kw)
    try:
        body = await resp.read()
    finally:
        resp.release()
    return resp, body


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls() -> LoopbackTLS:
    """A throwaway CA, a certificate for 127.0.0.1/localhost, and a client context trusting it."""
    return loopback_tls()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Any], Awaitable[Any]]]:
    """`await running(server)` starts a ScriptedServer or ForwardProxy; all are stopped after the test."""
    started: list[Any] = []

    async def run(server: Any) -> Any:
        await server.start()
        started.append(server)
        return server

    yield run
    for server in reversed(started):
        await server.stop()


@pytest.fixture
async def client(tls: LoopbackTLS, running: Any) -> AsyncIterator[UpstreamClient]:
    """A client trusting the test CA (closed before the servers stop)."""
    c = UpstreamClient(ssl_context=tls.client_context)
    yield c
    await c.close()


def on_first_connection(first: Callable[[Conn], Awaitable[None]], then: Callable[[Request], bytes]) -> Any:
    """A handler scripting the first connection with `first`, and answering later ones with `then`."""
    later = keep_alive(then)

    async def handler(conn: Conn) -> None:
        if conn.server.connections == 1:
            await first(conn)
        else:
            await later(conn)

    return handler


def fine(_: Request) -> bytes:
    """A plain keep-alive 200."""
    return response(200, b"fine")


# --- bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 12, 2 * 1024 * 1024])
async def test_content_length_body(client: UpstreamClient, running: Any, size: int) -> None:
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    srv = await running(ScriptedServer(keep_alive(
        lambda r: response(200, payload, headers=[("Content-Type", "application/octet-stream")]))))
    resp, body = await within(fetch(client, srv.url + "/v1/models"))
    assert (resp.status, resp.reason, resp.content_type) == (200, "OK", "application/octet-stream")
    assert body == payload


async def test_content_length_response_written_byte_by_byte(client: UpstreamClient, running: Any) -> None:
    wire = response(200, b'{"id": "byte-by-byte"}', headers=[("Content-Type", "application/json")])

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(*(wire[i:i + 1] for i in range(len(wire))), pause=0.001)
        await conn.wait_eof()

    srv = await running(ScriptedServer(handler))
    resp, body = await within(fetch(client, srv.url + "/"))
    assert (resp.status, body) == (200, b'{"id": "byte-by-byte"}')


async def test_chunked_body_split_at_every_byte_boundary(client: UpstreamClient, running: Any) -> None:
    """The whole response (head, chunk sizes, extensions, data, CRLFs, trailers) cut in two at each byte."""

    async def handler(conn: Conn) -> None:
        for _ in range(MAX_MESSAGES):
            req = await conn.read_request()
            if req is None:
                return
            cut = int(req.target.rsplit("/", 1)[1])
            await conn.send(CHUNKED_WIRE[:cut], CHUNKED_WIRE[cut:], pause=0.001)

    srv = await running(ScriptedServer(handler))
    for cut in range(1, len(CHUNKED_WIRE)):
        resp, body = await within(fetch(client, f"{srv.url}/split/{cut}"))
        assert (resp.status, body) == (200, CHUNKED_BODY), f"response cut at byte {cut}"
        assert "x-trailer" not in resp.headers


async def test_chunked_body_written_byte_by_byte(client: UpstreamClient, running: Any) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(*(CHUNKED_WIRE[i:i + 1] for i in range(len(CHUNKED_WIRE))), pause=0.001)
        await conn.wait_eof()

    srv = await running(ScriptedServer(handler))
    resp, body = await within(fetch(client, srv.url + "/"))
    assert (resp.status, body, resp.content_type) == (200, CHUNKED_BODY, "text/plain")


@pytest.mark.parametrize(("encoding", "encoded"), [
    ("gzip", gzip.compress(PLAIN)),
    ("deflate", zlib.compress(PLAIN)),  # RFC 9110 "deflate": the zlib format
])
async def test_compressed_body_is_decoded(client: UpstreamClient, running: Any, encoding: str, encoded: bytes) -> None:
    srv = await running(ScriptedServer(keep_alive(
        lambda r: response(200, encoded, headers=[("Content-Encoding", encoding)]))))
    resp, body = await within(fetch(client, srv.url + "/"))
    assert body == PLAIN
    assert srv.requests[0].headers["accept-encoding"] == "identity"


async def test_gzip_over_chunked_in_small_pieces_is_decoded(client: UpstreamClient, running: Any) -> None:
    encoded = gzip.compress(PLAIN)
    pieces = [encoded[i:i + 7] for i in range(0, len(encoded), 7)]
    head = response(200, headers=[("Content-Encoding", "GZIP"), ("Transfer-Encoding", "Chunked")],
                    content_length=False)

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(head, *(chunk(p) for p in pieces), b"0\r\n\r\n", pause=0.001)
        await conn.wait_eof()

    srv = await running(ScriptedServer(handler))
    resp = await within(client.request("GET", srv.url + "/"))
    try:
        got = await within(_collect(resp))
    finally:
        resp.release()
    assert got == PLAIN


async def _collect(resp: UpstreamResponse) -> bytes:
    return b"".join([piece async for piece in resp.iter_any()])


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_iter_any_yields_each_piece_as_it_arrives(client: UpstreamClient, running: Any, framing: str) -> None:
    """The server holds the second piece back until the test has received the first."""
    first, second = b"data: first\n\n", b"data: second\n\n"
    got_first = asyncio.Event()
    sent_early: list[bool] = []
    if framing == "chunked":
        head = response(200, headers=[("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")],
                        content_length=False)
        part1, part2 = chunk(first), chunk(second) + b"0\r\n\r\n"
    else:
        head = response(200, headers=[("Content-Type", "text/event-stream"),
                                      ("Content-Length", str(len(first + second)))], content_length=False)
        part1, part2 = first, second

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(head + part1)
        try:
            await asyncio.wait_for(got_first.wait(), 3.0)
        except TimeoutError:
            sent_early.append(True)  # the client never showed us the first piece: send on so it can finish
        await conn.send(part2)
        await conn.wait_eof()

    srv = await running(ScriptedServer(handler))
    resp = await within(client.request("GET", srv.url + "/stream"))
    received = b""

    async def consume() -> None:
        nonlocal received
        async for piece in resp.iter_any():
            received += piece
            if received == first:
                got_first.set()

    try:
        await within(consume(), 10.0)
    finally:
        resp.release()
    assert received == first + second
    assert not sent_early, "iter_any() held the first piece back until more of the body arrived"
    assert resp.content_type == "text/event-stream"


async def test_large_chunked_body(client: UpstreamClient, running: Any) -> None:
    pieces = [bytes([i % 256]) * 65536 for i in range(40)]  # 2.5 MiB: more than the client buffers at once
    srv = await running(ScriptedServer(keep_alive(
        lambda r: response(200, headers=[("Transfer-Encoding", "chunked")], content_length=False) + chunked(*pieces))))
    for _ in range(2):
        _, body = await within(fetch(client, srv.url + "/"))
        assert body == b"".join(pieces)
    assert srv.connections == 1


async def test_raw_deflate_body_is_decoded(client: UpstreamClient, running: Any) -> None:
    """Some servers send "deflate" without the zlib wrapper; aiohttp, which this client replaces, decoded it."""
    squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = squeeze.compress(PLAIN) + squeeze.flush()
    srv = await running(ScriptedServer(keep_alive(
        lambda r: response(200, raw, headers=[("Content-Encoding", "deflate")]))))
    _, body = await within(fetch(client, srv.url + "/"))
    assert body == PLAIN


async def test_bytes_beyond_content_length_are_not_taken_for_the_next_response(
        client: UpstreamClient, running: Any) -> None:
    async def first(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(response(200, b"exact") + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
        await keep_alive(fine)(conn)

    srv = await running(ScriptedServer(on_first_connection(first, fine)))
    _, body = await within(fetch(client, srv.url + "/"))
    assert body == b"exact"
    _, body = await within(fetch(client, srv.url + "/"))
    assert body == b"fine"


async def test_informational_response_before_the_real_one_is_skipped(client: UpstreamClient, running: Any) -> None:
    srv = await running(ScriptedServer(keep_alive(
        lambda r: b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n" + response(200, b"final"))))
    resp, body = await within(fetch(client, srv.url + "/"))
    assert (resp.status, body) == (200, b"final")


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_no_body_responses_end_at_the_head_and_keep_the_connection(
        client: UpstreamClient, running: Any, method: str, status: int) -> None:
    # HEAD and 304 announce the length of a body that is never sent.
    length = [] if status == 204 else [("Content-Length", "1234")]
    srv = await running(ScriptedServer(keep_alive(
        lambda r: response(status, reason="X", headers=length, content_length=False))))
    for _ in range(2):
        resp, body = await within(fetch(client, srv.url + "/", method=method))
        assert (resp.status, body) == (status, b"")
    assert srv.connections == 1


# --- keep-alive -----------------------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(client: UpstreamClient, running: Any) -> None:
    def answer(req: Request) -> bytes:
        n = int(req.target.rsplit("/", 1)[1])
        if n % 2:
            return response(200, headers=[("Transfer-Encoding", "chunked")], content_length=False) + chunked(
                req.target.encode(), trailers=[("X-Checksum", "abc")])
        return response(200, req.target.encode())

    srv = await running(ScriptedServer(keep_alive(answer)))
    for n in range(6):
        resp, body = await within(fetch(client, f"{srv.url}/r/{n}"))
        assert body == f"/r/{n}".encode()
    assert srv.connections == 1
    assert client.idle_connections() == 1


async def test_connection_close_is_not_reused(client: UpstreamClient, running: Any) -> None:
    srv = await running(ScriptedServer(keep_alive(lambda r: response(200, b"bye", headers=[("Connection", "Close")]))))
    for _ in range(3):
        resp, body = await within(fetch(client, srv.url + "/"))
        assert body == b"bye"
    assert srv.connections == 3
    assert client.idle_connections() == 0


@pytest.mark.parametrize(("version", "headers"), [("HTTP/1.0", []), ("HTTP/1.1", [("Connection", "close")])])
async def test_body_without_length_is_read_until_close(
        client: UpstreamClient, running: Any, version: str, headers: list[tuple[str, str]]) -> None:
    head = response(200, reason="OK", version=version, headers=[("Content-Type", "text/plain"), *headers],
                    content_length=False)

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(head, b"part one, ", b"part two", pause=0.002)
        # returning closes the connection: that is the end of the body

    srv = await running(ScriptedServer(handler))
    for _ in range(2):
        resp, body = await within(fetch(client, srv.url + "/"))
        assert (resp.status, body) == (200, b"part one, part two")
    assert srv.connections == 2
    assert client.idle_connections() == 0


async def test_http10_keep_alive_with_a_length_is_reused(client: UpstreamClient, running: Any) -> None:
    srv = await running(ScriptedServer(keep_alive(
        lambda r: response(200, b"old but alive", version="HTTP/1.0", headers=[("Connection", "keep-alive")]))))
    for _ in range(2):
        resp, body = await within(fetch(client, srv.url + "/"))
        assert body == b"old but alive"
    assert srv.connections == 1


async def test_pooled_connection_closed_by_the_server_is_not_reused(client: UpstreamClient, running: Any) -> None:
    close_now, closed = asyncio.Event(), asyncio.Event()

    async def first(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(response(200, b"first"))
        await asyncio.wait_for(close_now.wait(), LIMIT_S)
        await conn.close()
        closed.set()

    srv = await running(ScriptedServer(on_first_connection(first, fine)))
    _, body = await within(fetch(client, srv.url + "/"))
    assert body == b"first"
    assert client.idle_connections() == 1
    close_now.set()
    await within(closed.wait())
    await asyncio.sleep(0.05)  # one loop turn or so for the FIN to reach the client's protocol
    resp, body = await within(fetch(client, srv.url + "/"))
    assert (resp.status, body) == (200, b"fine")
    assert srv.connections == 2


async def test_release_before_the_body_was_read_closes_instead_of_pooling(
        client: UpstreamClient, running: Any) -> None:
    big = b"z" * 100_000
    released = asyncio.Event()

    async def first(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(response(200, headers=[("Content-Length", str(len(big)))], content_length=False) + big[:10])
        await asyncio.wait_for(released.wait(), LIMIT_S)  # the rest only once the client has let go
        await conn.send(big[10:])
        await keep_alive(lambda r: response(200, big))(conn)

    srv = await running(ScriptedServer(on_first_connection(first, lambda r: response(200, big))))
    resp = await within(client.request("GET", srv.url + "/"))
    resp.release()
    released.set()
    assert client.idle_connections() == 0
    # Had it been pooled, the next response would be parsed out of the rest of the unread body.
    _, body = await within(fetch(client, srv.url + "/"))
    assert body == big
    assert srv.connections == 2
    assert client.idle_connections() == 1


async def test_close_after_reading_drops_the_connection(client: UpstreamClient, running: Any) -> None:
    srv = await running(ScriptedServer(keep_alive(fine)))
    resp = await within(client.request("GET", srv.url + "/"))
    assert await within(resp.read()) == b"fine"
    resp.close()
    assert client.idle_connections() == 0
    await within(fetch(client, srv.url + "/"))
    assert srv.connections == 2


async def test_idle_connection_older_than_idle_timeout_is_not_reused(running: Any) -> None:
    srv = await running(ScriptedServer(keep_alive(fine)))
    client = UpstreamClient(idle_timeout_s=0.1)
    try:
        await within(fetch(client, srv.url + "/"))
        await asyncio.sleep(0.3)
        _, body = await within(fetch(client, srv.url + "/"))
    finally:
        await client.close()
    assert body == b"fine"
    assert srv.connections == 2


async def test_at_most_max_idle_per_host_are_kept(running: Any) -> None:
    all_in = asyncio.Event()

    async def handler(conn: Conn) -> None:
        for _ in range(MAX_MESSAGES):
            if await conn.read_request() is None:
                return
            if conn.server.connections >= 3:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), LIMIT_S)  # three requests in flight at once
            await conn.send(response(200, b"fine"))

    srv = await running(ScriptedServer(handler))
    client = UpstreamClient(max_idle_per_host=1)
    try:
        results = await within(asyncio.gather(*(fetch(client, srv.url + "/") for _ in range(3))))
        assert [body for _, body in results] == [b"fine"] * 3
        assert srv.connections == 3
        assert client.idle_connections() == 1
    finally:
        await client.close()


async def test_close_drops_pooled_connections(running: Any) -> None:
    hung_up = asyncio.Event()

    async def handler(conn: Conn) -> None:
        await keep_alive(fine)(conn)
        hung_up.set()  # keep_alive returns when the client closed the connection

    srv = await running(ScriptedServer(handler))
    client = UpstreamClient()
    await within(fetch(client, srv.url + "/"))
    assert client.idle_connections() == 1
    await client.close()
    assert client.idle_connections() == 0
    await within(hung_up.wait())


# --- request and response heads ---------------------------------------------------------------------------


async def test_request_head_and_body_arrive_intact(client: UpstreamClient, running: Any) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB with every byte value, CR and LF included
    srv = await running(ScriptedServer(keep_alive(lambda r: response(200, b"got it"))))
    headers = {"Authorization": "Bearer sk-test-123", "Content-Type": "application/json", "X-Trace": "t-1"}
    resp, body = await within(fetch(client, f"{srv.url}/v1/chat/completions?x=1&y=%20z", method="POST",
                                    body=payload, headers=headers))
    assert body == b"got it"
    req = srv.requests[0]
    assert req.request_line == "POST /v1/chat/completions?x=1&y=%20z HTTP/1.1"
    assert (req.headers["host"], req.count("host")) == (f"127.0.0.1:{srv.port}", 1)
    assert (req.headers["content-length"], req.count("content-length")) == (str(len(payload)), 1)
    assert req.headers["authorization"] == "Bearer sk-test-123"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-trace"] == "t-1"
    assert req.headers["accept-encoding"] == "identity"
    assert "transfer-encoding" not in req.headers
    assert req.body == payload


async def test_response_headers_are_lower_cased_and_joined(client: UpstreamClient, running: Any) -> None:
    wire = (b"HTTP/1.1 404 Not Found Here\r\nX-Multi: a\r\nContent-Type: Application/JSON; charset=UTF-8\r\n"
            b"x-multi: b\r\nX-Request-ID: Abc-123\r\nContent-Length: 2\r\n\r\n{}")
    answers = iter([wire, response(200, b"no type")])
    srv = await running(ScriptedServer(keep_alive(lambda r: next(answers))))
    resp, body = await within(fetch(client, srv.url + "/"))
    assert (resp.status, resp.reason, body) == (404, "Not Found Here", b"{}")
    assert all(name == name.lower() for name in resp.headers)
    assert resp.headers["x-multi"] == "a, b"
    assert resp.headers["x-request-id"] == "Abc-123"
    assert resp.headers["content-type"] == "Application/JSON; charset=UTF-8"
    assert resp.content_type == "application/json"
    resp, _ = await within(fetch(client, srv.url + "/"))
    assert resp.content_type == ""


async def test_header_values_cannot_inject_lines(client: UpstreamClient, running: Any) -> None:
    srv = await running(ScriptedServer(keep_alive(fine)))
    try:
        await within(fetch(client, srv.url + "/", headers={"X-Note": "a\r\nX-Injected: 1"}))
    except UpstreamHTTPError:
        pass  # refusing the request is fine too
    assert all("x-injected" not in req.headers for req in srv.requests)


async def test_cancelling_a_request_closes_its_connection(client: UpstreamClient, running: Any) -> None:
    hung_up = asyncio.Event()
    srv = await running(ScriptedServer(_silent_after(b"", hung_up)))
    task = asyncio.ensure_future(client.request("GET", srv.url + "/"))
    for _ in range(500):  # until the server has the request (bounded: 500 x 10 ms)
        if srv.requests:
            break
        await asyncio.sleep(0.01)
    assert srv.requests
    task.cancel()
    await asyncio.wait({task}, timeout=LIMIT_S)
    assert task.cancelled()
    assert client.idle_connections() == 0
    await within(hung_up.wait())


# --- broken responses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 200 OK\r\nContent-Le"], ids=["nothing", "half-a-head"])
async def test_closed_before_the_head_is_disconnected(client: UpstreamClient, running: Any, sent: bytes) -> None:
    async def first(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(sent)

    srv = await running(ScriptedServer(on_first_connection(first, fine)))
    with pytest.raises(UpstreamDisconnected):
        await within(client.request("GET", srv.url + "/"))
    assert client.idle_connections() == 0
    _, body = await within(fetch(client, srv.url + "/"))
    assert body == b"fine"


@pytest.mark.parametrize("partial", [
    response(200, headers=[("Content-Length", "100")], content_length=False) + b"0123456789",
    response(200, headers=[("Transfer-Encoding", "chunked")], content_length=False) + b"a\r\n01234",
    response(200, headers=[("Transfer-Encoding", "chunked")], content_length=False) + chunk(b"whole chunk"),
    response(200, headers=[("Transfer-Encoding", "chunked")], content_length=False) + chunk(b"x") + b"1",
], ids=["content-length", "chunked-inside-data", "chunked-between-chunks", "chunked-inside-size"])
async def test_server_closing_mid_body_is_a_payload_error_and_not_pooled(
        client: UpstreamClient, running: Any, partial: bytes) -> None:
    async def first(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(partial)

    srv = await running(ScriptedServer(on_first_connection(first, fine)))
    resp = await within(client.request("GET", srv.url + "/"))
    with pytest.raises(UpstreamPayloadError):
        await within(resp.read())
    resp.release()
    assert client.idle_connections() == 0
    _, body = await within(fetch(client, srv.url + "/"))
    assert body == b"fine"
    assert srv.connections == 2


@pytest.mark.parametrize("wire", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon in this line\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (4 * 1024 * 1024),  # a head that never ends
], ids=["not-http", "bad-status", "bad-header-line", "oversize-head"])
async def test_malformed_head_is_a_payload_error(client: UpstreamClient, running: Any, wire: bytes) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(wire)
        await conn.wait_eof()

    srv = await running(ScriptedServer(handler))
    with pytest.raises(UpstreamPayloadError):
        await within(client.request("GET", srv.url + "/"))
    assert client.idle_connections() == 0


# llhttp is strict where smuggling lives: whitespace inside a chunk extension is refused too.
@pytest.mark.parametrize("body", [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXY0\r\n\r\n",
                                  b"3; ext=1\r\nabc\r\n0\r\n\r\n"],
                         ids=["bad-size", "no-crlf-after-data", "space-in-extension"])
async def test_bad_chunk_framing_is_a_payload_error(client: UpstreamClient, running: Any, body: bytes) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(response(200, headers=[("Transfer-Encoding", "chunked")], content_length=False) + body)
        await conn.wait_eof()

    srv = await running(ScriptedServer(handler))
    with pytest.raises(UpstreamPayloadError):
        await within(fetch(client, srv.url + "/"))
    assert client.idle_connections() == 0


# --- timeouts ---------------------------------------------------------------------------------------------------


def _silent_after(sent: bytes, hung_up: asyncio.Event) -> Callable[[Conn], Awaitable[None]]:
    """A handler that reads the request, sends `sent`, then stays silent until the client hangs up."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        if sent:
            await conn.send(sent)
        if await conn.wait_eof(LIMIT_S):
            hung_up.set()

    return handler


async def test_read_timeout_before_the_head(client: UpstreamClient, running: Any) -> None:
    hung_up = asyncio.Event()
    srv = await running(ScriptedServer(_silent_after(b"", hung_up)))
    with pytest.raises(TimeoutError):
        await within(client.request("GET", srv.url + "/", read_timeout=0.2))
    assert client.idle_connections() == 0
    await within(hung_up.wait())  # the client closed the silent connection


@pytest.mark.parametrize("reader", ["read", "iter_any"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_read_timeout_mid_body(client: UpstreamClient, running: Any, framing: str, reader: str) -> None:
    if framing == "chunked":
        sent = response(200, headers=[("Transfer-Encoding", "chunked")], content_length=False) + chunk(b"partial")
    else:
        sent = response(200, headers=[("Content-Length", "100")], content_length=False) + b"partial"
    hung_up = asyncio.Event()
    srv = await running(ScriptedServer(_silent_after(sent, hung_up)))
    resp = await within(client.request("GET", srv.url + "/", read_timeout=0.2))
    assert resp.status == 200
    with pytest.raises(TimeoutError):
        if reader == "read":
            await within(resp.read())
        else:
            await within(_collect(resp))
    resp.release()
    assert client.idle_connections() == 0
    await within(hung_up.wait())


async def test_read_timeout_counts_silence_not_the_whole_body(client: UpstreamClient, running: Any) -> None:
    pieces = [f"piece {i};".encode() for i in range(15)]
    head = response(200, headers=[("Content-Length", str(sum(map(len, pieces))))], content_length=False)

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(head, *pieces, pause=0.03)  # 0.45 s in all, never 0.3 s of silence
        await conn.wait_eof()

    srv = await running(ScriptedServer(handler))
    _, body = await within(fetch(client, srv.url + "/", read_timeout=0.3))
    assert body == b"".join(pieces)


async def test_a_slow_reader_is_not_upstream_silence(client: UpstreamClient, running: Any) -> None:
    """The client may stop reading while the consumer is busy; that pause is not the upstream's silence."""
    big = bytes(range(256)) * 8192  # 2 MiB: more than the client buffers
    srv = await running(ScriptedServer(keep_alive(lambda r: response(200, big))))
    resp = await within(client.request("GET", srv.url + "/", read_timeout=0.2))
    received = b""

    async def consume_slowly() -> None:
        nonlocal received
        async for piece in resp.iter_any():
            if not received:
                await asyncio.sleep(0.5)  # busy with the first piece for longer than read_timeout
            received += piece

    try:
        await within(consume_slowly())
    finally:
        resp.release()
    assert received == big


async def test_connect_timeout_on_a_tls_handshake_nobody_answers(client: UpstreamClient, running: Any) -> None:
    hung_up = asyncio.Event()
    srv = await running(ScriptedServer(lambda conn: _wait_for_hangup(conn, hung_up)))  # plain TCP, says nothing
    with pytest.raises(TimeoutError):
        await within(client.request("GET", f"https://127.0.0.1:{srv.port}/", connect_timeout=0.2))
    await within(hung_up.wait())


async def _wait_for_hangup(conn: Conn, hung_up: asyncio.Event) -> None:
    if await conn.wait_eof(LIMIT_S):
        hung_up.set()


@pytest.mark.parametrize("which", ["connect_timeout", "read_timeout"])
async def test_timeout_while_the_proxy_ignores_connect(client: UpstreamClient, running: Any, which: str) -> None:
    hung_up = asyncio.Event()
    silent_proxy = await running(ScriptedServer(_silent_after(b"", hung_up)))
    with pytest.raises(TimeoutError):
        await within(client.request("GET", f"https://127.0.0.1:{free_port()}/", proxy=silent_proxy.url,
                                    **{which: 0.2}))
    assert silent_proxy.requests[0].method == "CONNECT"
    await within(hung_up.wait(), 3.0)  # the half-open tunnel was closed, not leaked


# --- connecting -----------------------------------------------------------------------------------------------------


async def test_connection_refused_is_a_connect_error(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamConnectError) as caught:
        await within(client.request("GET", f"http://127.0.0.1:{free_port()}/"))
    assert isinstance(caught.value, UpstreamHTTPError)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_proxy_refusing_the_connection_is_a_connect_error(
        client: UpstreamClient, running: Any, scheme: str) -> None:
    target = await running(ScriptedServer(keep_alive(fine)))
    with pytest.raises(UpstreamConnectError):
        await within(client.request("GET", f"{scheme}://127.0.0.1:{target.port}/",
                                    proxy=f"http://127.0.0.1:{free_port()}"))
    assert target.connections == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_https_direct(client: UpstreamClient, running: Any, tls: LoopbackTLS, host: str) -> None:
    srv = await running(ScriptedServer(keep_alive(lambda r: response(200, b"secure " + r.body)),
                                       ssl_context=tls.server_context))
    for _ in range(2):
        resp, body = await within(fetch(client, f"https://{host}:{srv.port}/v1/x", method="POST", body=b"hi"))
        assert (resp.status, body) == (200, b"secure hi")
    assert srv.requests[0].headers["host"] == f"{host}:{srv.port}"
    assert srv.connections == 1


@pytest.mark.parametrize("via_proxy", [False, True], ids=["direct", "through-connect"])
async def test_untrusted_certificate_is_a_connect_error(
        client: UpstreamClient, running: Any, via_proxy: bool) -> None:
    stranger = loopback_tls()  # signed by a CA the client does not trust
    srv = await running(ScriptedServer(keep_alive(fine), ssl_context=stranger.server_context))
    proxy = (await running(ForwardProxy())).url() if via_proxy else None
    with pytest.raises(UpstreamConnectError):
        await within(client.request("GET", f"https://127.0.0.1:{srv.port}/", proxy=proxy))
    assert srv.connections == 0  # no handshake completed
    assert client.idle_connections() == 0


async def test_certificate_for_another_name_is_a_connect_error(running: Any) -> None:
    other_name = loopback_tls("upstream.example")
    srv = await running(ScriptedServer(keep_alive(fine), ssl_context=other_name.server_context))
    client = UpstreamClient(ssl_context=other_name.client_context)  # trusts the CA, but the name is wrong
    try:
        with pytest.raises(UpstreamConnectError):
            await within(client.request("GET", f"https://127.0.0.1:{srv.port}/"))
    finally:
        await client.close()


# --- forward proxy ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("userinfo", "credentials"), [
    ("alice:s3cret@", "alice:s3cret"),
    ("alice:p%40ss%3Aw%20rd@", "alice:p@ss:w rd"),  # percent-encoded in the URL, sent decoded
    ("", None),
], ids=["basic", "percent-encoded", "anonymous"])
async def test_http_target_through_a_forward_proxy(
        client: UpstreamClient, running: Any, userinfo: str, credentials: str | None) -> None:
    target = await running(ScriptedServer(keep_alive(lambda r: response(200, b"via proxy: " + r.body))))
    proxy = await running(ForwardProxy())
    proxy_url = proxy.url().replace("http://", "http://" + userinfo)
    url = f"{target.url}/v1/chat/completions?a=1"
    for _ in range(2):
        resp, body = await within(fetch(client, url, method="POST", body=b"hello", proxy=proxy_url))
        assert (resp.status, body) == (200, b"via proxy: hello")
    assert [s.request_line for s in proxy.seen] == [f"POST {url} HTTP/1.1"] * 2
    assert [s.credentials() for s in proxy.seen] == [credentials] * 2
    assert target.requests[0].request_line == "POST /v1/chat/completions?a=1 HTTP/1.1"
    assert target.requests[0].body == b"hello"
    assert proxy.connections == 1  # the connection to the proxy is kept alive
    assert not proxy.errors


async def test_https_target_through_connect(client: UpstreamClient, running: Any, tls: LoopbackTLS) -> None:
    target = await running(ScriptedServer(keep_alive(lambda r: response(200, b"tunnelled " + r.body)),
                                          ssl_context=tls.server_context))
    proxy = await running(ForwardProxy())
    for _ in range(2):
        resp, body = await within(fetch(client, f"https://127.0.0.1:{target.port}/v1/chat/completions",
                                        method="POST", body=b"hello", proxy=proxy.url("alice", "s3cret"),
                                        headers={"Authorization": "Bearer sk-upstream"}))
        assert (resp.status, body) == (200, b"tunnelled hello")
    assert [s.request_line for s in proxy.seen] == [f"CONNECT 127.0.0.1:{target.port} HTTP/1.1"]  # tunnel pooled
    assert proxy.seen[0].credentials() == "alice:s3cret"
    req = target.requests[0]
    assert req.request_line == "POST /v1/chat/completions HTTP/1.1"  # origin-form inside the tunnel
    assert req.headers["host"] == f"127.0.0.1:{target.port}"
    assert req.headers["authorization"] == "Bearer sk-upstream"
    assert "proxy-authorization" not in req.headers  # proxy credentials stay with the proxy
    assert target.connections == 1
    assert not proxy.errors


@pytest.mark.parametrize("status", [407, 403])
async def test_proxy_refusing_connect_is_a_connect_error(
        client: UpstreamClient, running: Any, tls: LoopbackTLS, status: int) -> None:
    target = await running(ScriptedServer(keep_alive(fine), ssl_context=tls.server_context))
    proxy = await running(ForwardProxy(refuse_connect=status))
    with pytest.raises(UpstreamConnectError):
        await within(client.request("GET", f"https://127.0.0.1:{target.port}/", proxy=proxy.url("alice", "wrong")))
    assert [s.request_line for s in proxy.seen] == [f"CONNECT 127.0.0.1:{target.port} HTTP/1.1"]
    assert target.connections == 0
    assert client.idle_connections() == 0
