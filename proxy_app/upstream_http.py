"""The HTTP/1.1 client the proxy calls providers with: asyncio protocols, pooled keep-alive, TLS, proxies.

aiohttp's client put two tasks, a timeout context and several layers of objects on the
path of every upstream call: at one request at a time that was a third of the proxy's
added latency and most of a stream's time to first byte. This client does the one thing
the proxy needs: write a request in one syscall, parse the head by hand, hand over the
body as it arrives (Content-Length, chunked or read-until-close, gzip/deflate decoded).
It never retries on its own: one client request is one upstream request.
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

MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4096
# Reading pauses while this much body is waiting for the consumer (a slow client must not
# make us buffer a fast upstream without bound), and resumes below half of it.
HIGH_WATER = 256 * 1024
USER_AGENT = "NexusAI"

_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NO_BODY = range(4)
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)
_HEX = b"0123456789abcdefABCDEF"


class UpstreamHTTPError(Exception):
    """Talking to the upstream failed (timeouts raise TimeoutError instead)."""


class UpstreamConnectError(UpstreamHTTPError):
    """No connection: refused, name not resolved, TLS handshake failed, or the proxy refused the tunnel."""


class UpstreamDisconnected(UpstreamHTTPError):
    """The connection closed before the whole response head arrived."""


class UpstreamPayloadError(UpstreamHTTPError):
    """The response was malformed or broke off before its end."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses the response to the request in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self.keep_alive_s: float | None = None
        self.in_flight = False
        self.timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.head_buf = bytearray()
        self.response: UpstreamResponse | None = None
        self.head_done = False
        self.mode = _NO_BODY
        self.remaining = 0
        self.cstate = _SIZE
        self.cbuf = b""
        self.decoder: Any = None
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.reusable = False
        self.exc: BaseException | None = None
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.read_timeout: float | None = None
        self.last_data = 0.0
        self.head_only = False  # CONNECT: a head, then the tunnel

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
        if self.mode == _UNTIL_CLOSE:
            self._finish_body()
        else:
            self._fail(UpstreamPayloadError("upstream closed the connection before the end of its response"))

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.last_data = self.loop.time()
        if self.head_done:
            self._feed(data)
            return
        if not self.in_flight:
            # Bytes on an idle connection: nothing that follows them can be trusted.
            self.lost = True
            self.close()
            return
        buf = self.head_buf
        buf += data
        while not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(UpstreamPayloadError("upstream response head too large"))
                return
            head = bytes(buf[:end])
            del buf[:end + 4]
            try:
                self._parse_head(head)
            except UpstreamPayloadError as exc:
                self._fail(exc)
                return
        rest = bytes(buf)
        buf.clear()
        if rest:
            self._feed(rest)
        self._wake()

    def eof_received(self) -> bool | None:  # noqa: D102
        return False

    # --- parsing ----------------------------------------------------------

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
            raise UpstreamPayloadError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        last = ""
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t") and last:
                headers[last] += " " + line.strip().decode("latin-1")  # obsolete line folding
                continue
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise UpstreamPayloadError(f"malformed response header line: {line[:80]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
            last = key
        if 100 <= status < 200 and status != 101:
            return  # interim response (e.g. 103 Early Hints): the real head follows
        self.head_done = True
        http10 = parts[0] == b"HTTP/1.0"
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = ("keep-alive" in tokens) if http10 else ("close" not in tokens)
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if self.head_only or status in (204, 304) or self.response_to_head:
            mode = _NO_BODY
        elif te is not None:
            mode = _CHUNKED if te.rsplit(",", 1)[-1].strip().lower() == "chunked" else _UNTIL_CLOSE
            keep_alive = keep_alive and mode == _CHUNKED and cl is None
        elif cl is not None:
            values = {v.strip() for v in cl.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise UpstreamPayloadError(f"bad Content-Length: {cl[:40]!r}")
            mode = _LENGTH
            self.remaining = int(values.pop())
        else:
            mode = _UNTIL_CLOSE
        if mode == _UNTIL_CLOSE:
            keep_alive = False
        self.mode = mode
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
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        self.response = UpstreamResponse(self, status, reason, headers)
        if mode == _NO_BODY or (mode == _LENGTH and self.remaining == 0):
            self._finish_body()

    def _feed(self, data: bytes) -> None:
        if self.eof or self.exc is not None:
            self.reusable = False  # bytes after the end of the response
            return
        mode = self.mode
        try:
            if mode == _LENGTH:
                if len(data) >= self.remaining:
                    if len(data) > self.remaining:
                        self.reusable = False
                    self._push(data[:self.remaining] if len(data) > self.remaining else data)
                    self.remaining = 0
                    self._finish_body()
                else:
                    self.remaining -= len(data)
                    self._push(data)
            elif mode == _CHUNKED:
                self._feed_chunked(data)
            elif mode == _UNTIL_CLOSE:
                self._push(data)
            else:
                self.reusable = False
        except (UpstreamPayloadError, zlib.error) as exc:
            err = exc if isinstance(exc, UpstreamPayloadError) else UpstreamPayloadError(f"bad compressed body: {exc}")
            self._fail(err)
            return
        self._wake()

    def _feed_chunked(self, data: bytes) -> None:
        buf = self.cbuf + data if self.cbuf else data
        self.cbuf = b""
        pos, n = 0, len(buf)
        state = self.cstate
        while pos < n:
            if state == _DATA:
                take = min(self.remaining, n - pos)
                self._push(buf[pos:pos + take] if take < n or pos else buf)
                pos += take
                self.remaining -= take
                if not self.remaining:
                    state = _DATA_END
            elif state == _SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if n - pos > MAX_CHUNK_LINE:
                        raise UpstreamPayloadError("chunk size line too long")
                    self.cbuf = buf[pos:]
                    break
                digits = buf[pos:end].split(b";", 1)[0].strip()
                if not digits or digits.lstrip(_HEX):
                    raise UpstreamPayloadError(f"bad chunk size line: {buf[pos:end][:40]!r}")
                self.remaining = int(digits, 16)
                pos = end + 2
                state = _DATA if self.remaining else _TRAILER
            elif state == _DATA_END:
                if n - pos < 2:
                    if buf[pos:] != b"\r":
                        raise UpstreamPayloadError("chunk not followed by CRLF")
                    self.cbuf = buf[pos:]
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise UpstreamPayloadError("chunk not followed by CRLF")
                pos += 2
                state = _SIZE
            else:  # _TRAILER: optional fields, then an empty line
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if n - pos > MAX_HEAD_BYTES:
                        raise UpstreamPayloadError("chunked trailer too large")
                    self.cbuf = buf[pos:]
                    break
                if end == pos:
                    if end + 2 < n:
                        self.reusable = False
                    self.cstate = state
                    self._finish_body()
                    return
                pos = end + 2
        self.cstate = state

    def _push(self, piece: bytes) -> None:
        if self.decoder is not None:
            piece = self.decoder.decompress(piece)
        if piece:
            self.pieces.append(piece)
            self.buffered += len(piece)
            if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()

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
            waiter.set_exception(TimeoutError(f"no data from the upstream for {self.read_timeout:g} s"))

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

    response_to_head = False  # set for a HEAD request: the head announces a body that never comes


class _DeflateDecoder:
    """"deflate" is zlib-wrapped by the RFC, but some servers send it raw: tell from the first bytes."""

    def __init__(self) -> None:
        self._inner: Any = None
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
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"no connection to {hostport} in time") from None
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
        conn.transport = transport  # type: ignore[assignment]
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
