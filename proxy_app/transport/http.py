"""The HTTP/1.1 transport below the provider adapters: pooled keep-alive, TLS, proxies, timeouts.

The framing (status line, headers, Content-Length, chunked and read-until-close bodies) is
parsed by llhttp, Node.js's parser, through httptools (as uvicorn does). What is ours is
the connection handling around it: a request written in one syscall, the body handed over
as it arrives (gzip/deflate decoded), back-pressure, the pool, CONNECT tunnels, and
connect vs read timeouts told apart. It never retries: one call is one upstream request.
aiohttp's client was measured slower on this path (docs/benchmarks.md, issue 7).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import httptools

MAX_HEAD_BYTES = 64 * 1024
# Reading pauses while this much body is waiting for the consumer (a slow client must not
# make us buffer a fast upstream without bound), and resumes below half of it.
HIGH_WATER = 256 * 1024
USER_AGENT = "NexusAI"



class UpstreamHTTPError(Exception):
    """Talking to the upstream failed (timeouts raise TimeoutError instead)."""


class UpstreamConnectError(UpstreamHTTPError):
    """No connection: refused, name not resolved, TLS handshake failed, or the proxy refused the tunnel."""


class UpstreamDisconnected(UpstreamHTTPError):
    """The connection closed before the whole response head arrived."""


class UpstreamPayloadError(UpstreamHTTPError):
    """The response was malformed or broke off before its end."""


class UpstreamConnectTimeout(TimeoutError):
    """No connection (TCP, TLS, proxy tunnel) within the connect timeout."""


class UpstreamReadTimeout(TimeoutError):
    """The upstream sent nothing for the read timeout: before its head (first byte) or mid-body."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; hands the response to the request in flight to llhttp."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self.keep_alive_s: float | None = None
        self.in_flight = False
        self.timer: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout: float | None = None
        self.last_data = 0.0
        self.head_only = False  # CONNECT: a head, then the tunnel
        self.response_to_head = False  # HEAD: the head announces a body that never comes
        self.parser = httptools.HttpResponseParser(self)
        self.parsed_whole = True  # llhttp saw the last response to its end: it is ready for the next
        self._reset()

    def _reset(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.parsed_whole:
            # A response that ended early for llhttp (HEAD, CONNECT, an error) leaves it mid-message.
            self.parser = httptools.HttpResponseParser(self)
            self.parsed_whole = True
        self.header_list: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.reason = b""
        self.response: UpstreamResponse | None = None
        self.head_done = False
        self.until_close = False
        self.decoder: Any = None
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.reusable = False
        self.exc: BaseException | None = None
        self.paused = False

    # --- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.lost = True
        if self.eof or self.exc is not None:
            return
        if not self.head_done:
            if self.in_flight:
                self._fail(UpstreamDisconnected("upstream closed the connection before its response"))
            return
        if self.until_close:
            self._finish_body()
        else:
            self._fail(UpstreamPayloadError("upstream closed the connection before the end of its response"))

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.last_data = self.loop.time()
        if not self.in_flight or self.eof or self.exc is not None:
            # Bytes on an idle connection or after the response: nothing that follows can be trusted.
            self.reusable = False
            if not self.in_flight:
                self.lost = True
                self.close()
            return
        if not self.head_done:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamPayloadError("upstream switched protocols"))
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
            if isinstance(cause, UpstreamPayloadError):
                self._fail(cause)
            elif isinstance(cause, zlib.error):
                self._fail(UpstreamPayloadError(f"bad compressed body: {cause}"))
            elif self.head_only and self.response is not None:
                return  # a CONNECT answer followed by tunnel bytes: not ours to parse
            else:
                self._fail(UpstreamPayloadError(f"malformed response: {_parser_reason(exc)}"))
            return
        if not self.head_done and self.head_bytes > MAX_HEAD_BYTES:
            # httptools holds a header it has not seen the end of: bound what a head may take.
            self._fail(UpstreamPayloadError("upstream response head too large"))
            return
        self._wake()

    def eof_received(self) -> bool | None:  # noqa: D102
        return False

    # --- llhttp's callbacks ---------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        """The status line's reason phrase (llhttp may hand it over in parts)."""
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        """One response header (a repeated name is joined when the head is complete)."""
        self.header_list.append((name, value))

    def on_headers_complete(self) -> None:
        """The head is in: the response is ready for its reader."""
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # Interim (e.g. 103 Early Hints): the real head follows on the same message stream.
            self.header_list = []
            self.head_bytes = 0
            self.reason = b""
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.header_list:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1").strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.header_list = []
        self.head_done = True
        no_body = self.head_only or self.response_to_head or status in (204, 304)
        framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()
        self.until_close = not no_body and not framed
        keep_alive = self.parser.should_keep_alive() and not self.until_close
        self.reusable = keep_alive and not self.head_only
        if keep_alive:
            self.keep_alive_s = _keep_alive_timeout(headers.get("keep-alive"))
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self.decoder = _DeflateDecoder()
        elif encoding not in ("identity", ""):
            raise UpstreamPayloadError(f"unsupported Content-Encoding {encoding!r} (we asked for identity)")
        self.response = UpstreamResponse(self, status, self.reason.decode("latin-1"), headers)
        if no_body:
            self._finish_body()

    def on_body(self, body: bytes) -> None:
        """A piece of the body, de-chunked by llhttp."""
        if self.eof:
            return
        if self.decoder is not None:
            body = self.decoder.decompress(body)
        if body:
            self.pieces.append(body)
            self.buffered += len(body)
            if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        """The end of the response (interim heads end here too)."""
        self.parsed_whole = True
        if self.head_done and not self.eof:
            self._finish_body()

    def on_message_begin(self) -> None:
        """A response starts: after the one in flight ended, that is bytes no request asked for."""
        self.parsed_whole = False
        if self.eof:
            self.reusable = False

    # --- the end ----------------------------------------------------------------

    def _finish_body(self) -> None:
        if self.decoder is not None:
            try:
                tail = self.decoder.flush()
            except zlib.error as exc:
                self._fail(UpstreamPayloadError(f"bad compressed body: {exc}"))
                return
            self.decoder = None
            if tail:
                self.pieces.append(tail)
                self.buffered += len(tail)
        self.eof = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self.exc = exc
        self.reusable = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    # --- waiting ------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Until the head, more body, the end or an error arrives (bounded by the read timeout)."""
        waiter = self.waiter = self.loop.create_future()
        if self.read_timeout is not None and self.timer is None:
            self.timer = self.loop.call_at(self.last_data + self.read_timeout, self._check_timeout)
        try:
            await waiter
        finally:
            if self.waiter is waiter:
                self.waiter = None

    def _check_timeout(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or self.read_timeout is None:
            return
        due = self.last_data + self.read_timeout
        if self.loop.time() < due:
            self.timer = self.loop.call_at(due, self._check_timeout)
            return
        self.waiter = None
        self.reusable = False
        if self.transport is not None:
            self.transport.close()
        if not waiter.done():
            waiter.set_exception(UpstreamReadTimeout(f"no data from the upstream for {self.read_timeout:g} s"))

    def send(self, data: bytes, read_timeout: float | None, head_only: bool = False) -> None:
        """Write one request and get ready for its response."""
        self._reset()
        self.read_timeout = read_timeout
        self.head_only = head_only
        self.last_data = self.loop.time()
        self.in_flight = True
        assert self.transport is not None
        self.transport.write(data)

    def usable(self, now: float, idle_timeout: float) -> bool:
        """Still open and fresh enough to carry another request."""
        limit = idle_timeout if self.keep_alive_s is None else min(idle_timeout, self.keep_alive_s)
        return (not self.lost and self.reusable and self.transport is not None
                and not self.transport.is_closing() and now - self.idle_since < limit)

    def park(self, now: float) -> None:
        """Between requests, in the pool."""
        self._reset()
        self.reusable = True
        self.in_flight = False
        self.idle_since = now

    def close(self) -> None:
        """Drop the connection."""
        self.reusable = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()


def _parser_reason(exc: BaseException) -> str:
    # llhttp's reason, never the bytes it choked on (an upstream may echo our request).
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.split(":", 1)[0][:80]


class _DeflateDecoder:
    """"deflate" is zlib-wrapped by the RFC, but some servers send it raw: tell from the first bytes."""

    def __init__(self) -> None:
        self._inner: zlib._Decompress | None = None
        self._head = b""

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            cmf, flg = self._head[0], self._head[1]
            wrapped = cmf & 0x0F == 8 and (cmf * 256 + flg) % 31 == 0
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._head = self._head, b""
        return self._inner.decompress(data)

    def flush(self) -> bytes:
        if self._inner is None:
            if self._head:
                raise zlib.error("truncated deflate body")
            return b""
        return self._inner.flush()


def _keep_alive_timeout(value: str | None) -> float | None:
    """The server's idle timeout from `Keep-Alive: timeout=N`, minus a margin; None when absent."""
    if not value:
        return None
    for part in value.split(","):
        name, _, number = part.strip().partition("=")
        if name.strip().lower() == "timeout" and number.strip().isdigit():
            return max(0.0, int(number.strip()) - 1.0)
    return None


class UpstreamResponse:
    """A response whose head has arrived; read the body with read() or iter_any(), then release()."""

    __slots__ = ("_conn", "_client", "_key", "status", "reason", "headers", "content_type")

    def __init__(self, conn: _Connection, status: int, reason: str, headers: dict[str, str]) -> None:
        self._conn: _Connection | None = conn
        self._client: UpstreamClient | None = None
        self._key: tuple[Any, ...] | None = None
        self.status = status
        self.reason = reason
        self.headers: Mapping[str, str] = headers
        ctype = headers.get("content-type", "")
        self.content_type = ctype.split(";", 1)[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        if conn is not None and conn.eof and conn.exc is None:
            data = b"".join(conn.pieces) if len(conn.pieces) != 1 else conn.pieces[0]
            conn.pieces.clear()
            conn.buffered = 0
            return data
        parts = [piece async for piece in self.iter_any()]
        return b"".join(parts)

    def iter_any(self) -> _BodyIterator:
        """The body, in pieces, as they arrive."""
        return _BodyIterator(self._conn)

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool when it can carry another request."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.reusable and conn.eof and conn.exc is None and self._client is not None and not conn.lost:
            self._client._put(self._key, conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection now (the body is abandoned)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _BodyIterator:
    """Async iterator over body pieces; each step returns everything buffered so far."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection | None) -> None:
        self._conn = conn

    def __aiter__(self) -> _BodyIterator:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        while True:
            pieces = conn.pieces
            if pieces:
                data = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
                pieces.clear()
                conn.buffered = 0
                if conn.paused and conn.transport is not None:
                    conn.paused = False
                    conn.transport.resume_reading()
                return data
            if conn.exc is not None:
                raise conn.exc
            if conn.eof:
                raise StopAsyncIteration
            await conn.wait()


class UpstreamClient:
    """Pooled keep-alive connections per (scheme, host, port, proxy)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, idle_timeout_s: float = 15.0,
                 max_idle_per_host: int = 64) -> None:
        self._ssl = ssl_context
        self._idle_timeout = idle_timeout_s
        self._max_idle = max_idle_per_host
        self._idle: dict[tuple[Any, ...], list[_Connection]] = {}
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # Made on first use: plain-HTTP deployments never load the CA store.
            self._ssl = ssl.create_default_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; the response once its head has arrived."""
        if self._closed:
            raise UpstreamHTTPError("the upstream client is closed")
        scheme, host, port, target, hostport = _split_url(url)
        key = (scheme, host, port, proxy)
        proxy_auth = None
        if proxy is not None and scheme == "http":
            target = f"http://{hostport}{target}"  # absolute-form, for a forward proxy
            proxy_auth = _proxy_authorization(proxy)
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {hostport}\r\n"]
        if proxy_auth:
            lines.append(f"Proxy-Authorization: {proxy_auth}\r\n")
        for name, value in (headers or {}).items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
                raise UpstreamHTTPError(f"invalid header {name!r}")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\nAccept-Encoding: identity\r\nUser-Agent: {USER_AGENT}\r\n\r\n")
        data = "".join(lines).encode("utf-8") + body
        conn = self._get(key)
        if conn is None:
            conn = await self._connect(scheme, host, port, hostport, proxy, connect_timeout, read_timeout)
        conn.response_to_head = method == "HEAD"
        conn.send(data, read_timeout)
        try:
            while conn.response is None:
                if conn.exc is not None:
                    raise conn.exc
                await conn.wait()
        except BaseException:
            conn.close()
            raise
        response = conn.response
        response._client = self
        response._key = key
        return response

    def _get(self, key: tuple[Any, ...]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self._idle_timeout):
                return conn
            conn.close()
        return None

    def _put(self, key: tuple[Any, ...] | None, conn: _Connection) -> None:
        if self._closed or key is None:
            conn.close()
            return
        idle = self._idle.setdefault(key, [])
        now = conn.loop.time()
        # Oldest first: drop the ones past their time, so an endpoint no longer used lets its sockets go.
        while idle and not idle[0].usable(now, self._idle_timeout):
            idle.pop(0).close()
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.park(now)
        idle.append(conn)

    async def _connect(self, scheme: str, host: str, port: int, hostport: str, proxy: str | None,
                       connect_timeout: float | None, read_timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = scheme == "https"
        if proxy is None:
            dial_host, dial_port, dial_tls = host, port, tls
        else:
            proxy_scheme, dial_host, dial_port, _, _ = _split_url(proxy)
            dial_tls = proxy_scheme == "https"
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), dial_host, dial_port,
                    ssl=self._ssl_context() if dial_tls else None,
                    server_hostname=dial_host if dial_tls else None,
                )
                if proxy is not None and tls:
                    shown = f"[{host}]" if ":" in host else host
                    await self._tunnel(conn, f"{shown}:{port}", proxy, host, read_timeout)
        except BaseException as exc:
            if conn is not None:
                conn.close()  # e.g. a tunnel that timed out: the proxy must see us go
            if isinstance(exc, UpstreamReadTimeout):
                raise UpstreamConnectTimeout(f"the proxy did not answer CONNECT to {hostport} in time") from None
            if isinstance(exc, TimeoutError):
                raise UpstreamConnectTimeout(f"no connection to {hostport} in time") from None
            if isinstance(exc, OSError):  # refused, DNS, TLS (ssl errors are OSErrors)
                raise UpstreamConnectError(f"cannot connect to {hostport}: {type(exc).__name__}: {exc}") from None
            raise
        return conn

    async def _tunnel(self, conn: _Connection, hostport: str, proxy: str, host: str,
                      read_timeout: float | None) -> None:
        auth = _proxy_authorization(proxy)
        head = f"CONNECT {hostport} HTTP/1.1\r\nHost: {hostport}\r\n"
        if auth:
            head += f"Proxy-Authorization: {auth}\r\n"
        conn.send((head + "\r\n").encode("utf-8"), read_timeout, head_only=True)
        try:
            while conn.response is None:
                if conn.exc is not None:
                    raise conn.exc
                await conn.wait()
        except UpstreamHTTPError as exc:
            conn.close()
            raise UpstreamConnectError(f"proxy tunnel to {hostport} failed: {exc}") from None
        status = conn.response.status
        if status != 200:
            conn.close()
            raise UpstreamConnectError(f"proxy refused the tunnel to {hostport}: HTTP {status}")
        assert conn.transport is not None
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(conn.transport, conn, self._ssl_context(), server_hostname=host)
        if transport is None:
            raise UpstreamConnectError(f"TLS through the proxy to {hostport} failed")
        conn.transport = transport
        conn._reset()
        conn.in_flight = False

    def idle_connections(self) -> int:
        """Pooled idle connections (for tests and diagnostics)."""
        return sum(len(v) for v in self._idle.values())

    async def close(self) -> None:
        """Close every pooled connection; later requests fail."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _split_url(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, request target, Host header) of an http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    # Never the URL itself in the message: a proxy URL carries its password.
    if scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamHTTPError(f"unsupported URL (scheme {scheme!r})")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UpstreamHTTPError(f"bad port in URL for host {parts.hostname!r}") from None
    host = parts.hostname
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    hostport = shown if parts.port in (None, default) else f"{shown}:{port}"
    return scheme, host, port, target, hostport


def _proxy_authorization(proxy: str) -> str | None:
    parts = urlsplit(proxy)
    if parts.username is None:
        return None
    creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(creds.encode("utf-8")).decode("ascii")
