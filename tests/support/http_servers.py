"""Loopback HTTP test servers on the test's own event loop: a scripted raw TCP server, a forward proxy, TLS certs.

`ScriptedServer` hands each accepted connection to a handler the test writes, so a test can send any
bytes at any pace (byte by byte, split chunk framing, hang-ups mid-body, silence); it counts the
connections it accepted and records the requests its handlers read. `ForwardProxy` is a small HTTP
proxy (absolute-form forwarding and CONNECT tunnels, loopback targets only) that records every
request line and Proxy-Authorization it saw. `loopback_tls()` makes a throwaway CA, a server
certificate for 127.0.0.1/localhost and a client context trusting that CA.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trustme

HEAD_LIMIT = 1 << 20
WAIT_S = 5.0
MAX_MESSAGES = 10_000  # requests served on one connection, and lines in a chunked body: loops stay bounded
MAX_PIPE_READS = 1_000_000
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                        "transfer-encoding", "content-length", "te", "upgrade"})


@dataclass
class Request:
    """One HTTP request as a server read it off the wire."""

    method: str
    target: str
    version: str
    header_list: list[tuple[str, str]]
    body: bytes

    @property
    def request_line(self) -> str:
        """The start line without its CRLF, e.g. 'POST /v1/x HTTP/1.1'."""
        return f"{self.method} {self.target} {self.version}"

    @property
    def headers(self) -> dict[str, str]:
        """Header names lower-cased; repeated headers joined with ', '."""
        joined: dict[str, str] = {}
        for name, value in self.header_list:
            key = name.lower()
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        return joined

    def count(self, name: str) -> int:
        """How many times a header (any case) occurred."""
        return sum(1 for n, _ in self.header_list if n.lower() == name.lower())


def parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Split a message head into its start line and (name, value) header pairs."""
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


async def read_head(reader: asyncio.StreamReader, timeout: float = 30.0) -> bytes | None:
    """One message head through its blank line, or None on a clean EOF before any byte of it."""
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ConnectionError("connection closed inside a message head") from exc
        return None


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body, decoded (extensions and trailers dropped)."""
    body = b""
    for _ in range(MAX_MESSAGES):
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            for _ in range(MAX_MESSAGES):
                if await reader.readuntil(b"\r\n") == b"\r\n":
                    return body
        body += (await reader.readexactly(size + 2))[:-2]
    raise ValueError("too many chunks")


async def read_request(reader: asyncio.StreamReader, timeout: float = 30.0) -> Request | None:
    """The next request on a connection (head and body), or None when the peer closed cleanly."""
    head = await read_head(reader, timeout)
    if head is None:
        return None
    start, header_list = parse_head(head)
    method, target, version = start.split(" ", 2)
    req = Request(method, target, version, header_list, b"")
    if "chunked" in req.headers.get("transfer-encoding", "").lower():
        req.body = await asyncio.wait_for(read_chunked(reader), WAIT_S)
    else:
        length = int(req.headers.get("content-length", "0") or "0")
        req.body = await asyncio.wait_for(reader.readexactly(length), WAIT_S)
    return req


def response(status: int = 200, body: bytes = b"", *, reason: str = "OK", headers: list[tuple[str, str]] | None = None,
             version: str = "HTTP/1.1", content_length: bool = True) -> bytes:
    """A whole response: status line, the given headers, Content-Length (unless told not to), body."""
    lines = [f"{version} {status} {reason}"] + [f"{n}: {v}" for n, v in headers or []]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunk(piece: bytes, extension: str = "") -> bytes:
    """One chunk of a chunked body (`extension` like ';name=value')."""
    return f"{len(piece):x}{extension}\r\n".encode() + piece + b"\r\n"


def chunked(*pieces: bytes, trailers: list[tuple[str, str]] | None = None) -> bytes:
    """A whole chunked body: one chunk per non-empty piece, the last chunk, trailers, the final CRLF."""
    tail = "".join(f"{n}: {v}\r\n" for n, v in trailers or []).encode()
    return b"".join(chunk(p) for p in pieces if p) + b"0\r\n" + tail + b"\r\n"


def _closes_after(data: bytes) -> bool:
    start, headers = parse_head(data.split(b"\r\n\r\n", 1)[0])
    connection = ", ".join(v for n, v in headers if n.lower() == "connection").lower()
    if start.startswith("HTTP/1.0"):
        return "keep-alive" not in connection
    return "close" in connection


class Conn:
    """One accepted connection, as a scripted handler sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer) -> None:
        self.reader = reader
        self.writer = writer
        self.server = server

    async def read_request(self, timeout: float = 30.0) -> Request | None:
        """The next request (recorded on the server), or None when the client closed."""
        req = await read_request(self.reader, timeout)
        if req is not None:
            self.server.requests.append(req)
        return req

    async def send(self, *parts: bytes, pause: float = 0.0) -> None:
        """Write each part and drain it, pausing `pause` seconds between parts so they leave separately."""
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            self.writer.write(part)
            await self.writer.drain()

    async def hang(self) -> None:
        """Keep the connection open and silent until the server stops."""
        await self.server.stopping.wait()

    async def close(self) -> None:
        """Close our side (FIN) and wait, bounded, until the transport is gone."""
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), WAIT_S)

    async def wait_eof(self, timeout: float = WAIT_S) -> bool:
        """Read and discard until the client closes; False if it did not within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                for _ in range(MAX_MESSAGES):
                    if not await self.reader.read(65536):
                        return True
        except (TimeoutError, ConnectionError):
            return False
        return False


Handler = Callable[[Conn], Awaitable[None]]


def keep_alive(responder: Callable[[Request], bytes]) -> Handler:
    """A handler answering every request on a connection with `responder(request)`; it closes the
    connection after a response that says so (Connection: close, or HTTP/1.0 without keep-alive)."""

    async def handler(conn: Conn) -> None:
        for _ in range(MAX_MESSAGES):
            req = await conn.read_request()
            if req is None:
                return
            data = responder(req)
            await conn.send(data)
            if _closes_after(data):
                return

    return handler


class ScriptedServer:
    """A raw TCP (optionally TLS) server on 127.0.0.1 whose per-connection behaviour is `handler`."""

    def __init__(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0  # accepted (after the TLS handshake, for TLS)
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []  # unexpected handler failures, for debugging
        self.stopping = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """Base URL, http:// or https:// by whether the server speaks TLS."""
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> ScriptedServer:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl_context,
                                                  limit=HEAD_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening, end every handler and close every connection (bounded)."""
        self.stopping.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=0.5)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=WAIT_S)
        if self._server is not None:
            await asyncio.wait_for(self._server.wait_closed(), WAIT_S)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        try:
            await self.handler(Conn(reader, writer, self))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError):
            pass  # the client hung up or went silent: normal in these tests
        except Exception as exc:  # kept for a test to inspect
            self.errors.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]


@dataclass
class ProxySeen:
    """One request a ForwardProxy received."""

    request_line: str
    proxy_authorization: str | None

    def credentials(self) -> str | None:
        """The decoded 'user:password' of a Basic Proxy-Authorization, or None."""
        if not self.proxy_authorization:
            return None
        scheme, _, token = self.proxy_authorization.partition(" ")
        assert scheme.lower() == "basic", self.proxy_authorization
        return base64.b64decode(token).decode("utf-8")


@dataclass
class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1: absolute-form requests are forwarded, CONNECT is tunnelled.

    `refuse_connect` (e.g. 407 or 403) answers every CONNECT with that status instead. Only loopback
    targets are served; anything else gets 403.
    """

    refuse_connect: int | None = None
    seen: list[ProxySeen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = ScriptedServer(self._handle)

    @property
    def connections(self) -> int:
        """Client connections the proxy accepted."""
        return self._server.connections

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected failures inside the proxy."""
        return self._server.errors

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """The proxy URL, with credentials when given."""
        auth = f"{user}:{password}@" if user is not None else ""
        return f"http://{auth}127.0.0.1:{self._server.port}"

    async def start(self) -> ForwardProxy:
        """Listen on a free loopback port."""
        await self._server.start()
        return self

    async def stop(self) -> None:
        """Stop serving and close every connection and tunnel."""
        await self._server.stop()

    async def _handle(self, conn: Conn) -> None:
        for _ in range(MAX_MESSAGES):
            req = await conn.read_request()
            if req is None:
                return
            self.seen.append(ProxySeen(req.request_line, req.headers.get("proxy-authorization")))
            if req.method == "CONNECT":
                await self._tunnel(conn, req)
                return
            if not await self._forward(conn, req):
                return

    async def _refuse(self, conn: Conn, status: int, reason: str) -> None:
        await conn.send(response(status, reason.encode(), reason=reason,
                                 headers=[("Proxy-Authenticate", 'Basic realm="test"'), ("Connection", "close")]))

    async def _tunnel(self, conn: Conn, req: Request) -> None:
        host, _, port = req.target.rpartition(":")
        host = host.strip("[]")
        if self.refuse_connect is not None:
            reason = "Proxy Authentication Required" if self.refuse_connect == 407 else "Refused"
            await self._refuse(conn, self.refuse_connect, reason)
            return
        if host not in LOOPBACK_HOSTS:
            await self._refuse(conn, 403, "Forbidden")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), WAIT_S)
        except (OSError, TimeoutError):
            await self._refuse(conn, 502, "Bad Gateway")
            return
        try:
            await conn.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(conn.reader, up_writer), _pipe(up_reader, conn.writer))
        finally:
            up_writer.close()

    async def _forward(self, conn: Conn, req: Request) -> bool:
        """Forward one absolute-form request and relay its response; False when the connection must end."""
        target = urlsplit(req.target)
        if target.scheme != "http" or target.hostname not in LOOPBACK_HOSTS:
            await self._refuse(conn, 403, "Forbidden")
            return False
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(target.hostname, target.port or 80, limit=HEAD_LIMIT), WAIT_S)
        except (OSError, TimeoutError):
            await self._refuse(conn, 502, "Bad Gateway")
            return False
        try:
            path = (target.path or "/") + (f"?{target.query}" if target.query else "")
            headers = [(n, v) for n, v in req.header_list if n.lower() not in HOP_BY_HOP]
            headers += [("Content-Length", str(len(req.body))), ("Connection", "close")]
            head = f"{req.method} {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
            up_writer.write(head.encode("latin-1") + req.body)
            await up_writer.drain()
            return await _relay_response(up_reader, conn.writer, req.method)
        finally:
            up_writer.close()


async def _relay_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str) -> bool:
    """Copy one response from `reader` to `writer` as it arrives; False if the client connection must close."""
    raw = await read_head(reader, WAIT_S)
    if raw is None:
        raise ConnectionError("upstream closed before answering")
    start, header_list = parse_head(raw)
    status = int(start.split(" ")[1])
    headers = {n.lower(): v for n, v in header_list}
    kept = [(n, v) for n, v in header_list if n.lower() not in ("connection", "keep-alive", "proxy-connection")]
    no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
    is_chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    until_close = not no_body and not is_chunked and "content-length" not in headers
    if until_close:
        kept.append(("Connection", "close"))
    head = "HTTP/1.1 " + start.split(" ", 1)[1] + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in kept) + "\r\n"
    writer.write(head.encode("latin-1"))
    await writer.drain()
    if no_body:
        return True
    if is_chunked:
        for _ in range(MAX_MESSAGES):
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                for _ in range(MAX_MESSAGES):
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        await writer.drain()
                        return True
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
        return False
    if until_close:
        await _pipe(reader, writer)
        return False
    remaining = int(headers["content-length"])
    for _ in range(remaining + 1):
        if remaining <= 0:
            return True
        data = await reader.read(min(remaining, 65536))
        if not data:
            return False
        remaining -= len(data)
        writer.write(data)
        await writer.drain()
    return remaining <= 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until EOF, then pass the EOF on."""
    try:
        for _ in range(MAX_PIPE_READS):
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


@dataclass(frozen=True)
class LoopbackTLS:
    """A server context with a certificate from a throwaway CA, and a client context trusting that CA."""

    server_context: ssl.SSLContext
    client_context: ssl.SSLContext


def loopback_tls(*hostnames: str) -> LoopbackTLS:
    """A fresh CA and a server certificate for `hostnames` (default 127.0.0.1 and localhost)."""
    ca = trustme.CA()
    cert = ca.issue_cert(*(hostnames or ("127.0.0.1", "localhost")))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return LoopbackTLS(server, client)
