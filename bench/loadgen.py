"""A closed-loop HTTP/1.1 load generator on raw asyncio protocols (uvloop when present).

Each of `concurrency` workers owns one keep-alive connection to 127.0.0.1 and
sends its next request as soon as the previous response has fully arrived. A
run stops at `duration_s` or after `max_requests`, whichever comes first.
Hand-parsed responses (Content-Length or chunked) keep the client's own cost
to a few tens of microseconds per request, so it is not the bottleneck.

Latency is from the last byte sent to the last byte received; time to first
byte (TTFB) is to the first byte of the response *body* (for SSE: the first
event), which is what a streaming client waits for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_ERROR_SAMPLES = 5

# A request to send and a check of its response: (status, body) -> error text or None.
Validator = Callable[[int, bytes], "str | None"]


@dataclass(slots=True)
class Request:
    """Raw request bytes and how to judge the answer."""

    data: bytes
    validate: Validator


@dataclass
class LoadResult:
    """What one closed-loop run measured."""

    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def rps(self) -> float:
        """Completed requests per second of wall time."""
        return self.requests / self.wall_s if self.wall_s else 0.0

    def pct(self, p: float, ttfb: bool = False) -> float:
        """The p-th percentile (nearest rank) of latency or TTFB, in ms."""
        values = sorted(self.ttfb_ms if ttfb else self.latencies_ms)
        if not values:
            return float("nan")
        rank = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
        return values[rank]

    def summary(self) -> dict[str, float | int]:
        """Headline figures as a flat dict."""
        return {
            "requests": self.requests, "errors": self.errors, "rps": round(self.rps, 1),
            "p50_ms": self.pct(50), "p90_ms": self.pct(90), "p99_ms": self.pct(99),
            "ttfb_p50_ms": self.pct(50, True), "ttfb_p99_ms": self.pct(99, True),
        }


class _Done(Exception):
    pass


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes, float]] | None = None
        self._state = 0  # 0 headers, 1 content-length body, 2 chunked body
        self._status = 0
        self._remaining = 0
        self._body = bytearray()
        self.first_body_at = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection closed mid-response: {exc!r}"))

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes, float]]:
        """Write a request; the future gives (status, body, time the body completed)."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._state = 0
        self._body = bytearray()
        self.first_body_at = 0.0
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:  # noqa: D102
        now = time.perf_counter()
        self._buf += data
        try:
            self._parse(now)
        except _Done:
            pass
        except Exception as exc:  # noqa: BLE001 - a malformed response fails that request
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

    def _finish(self, now: float) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, bytes(self._body), now))
        raise _Done

    def _parse(self, now: float) -> None:
        buf = self._buf
        if self._state == 0:
            end = buf.find(b"\r\n\r\n")
            if end == -1:
                return
            head = bytes(buf[:end]).lower()
            del buf[:end + 4]
            self._status = int(head[9:12])
            if b"\r\ntransfer-encoding: chunked" in head:
                self._state = 2
            else:
                i = head.find(b"\r\ncontent-length:")
                if i == -1:
                    raise ValueError("response without Content-Length or chunked encoding")
                j = head.find(b"\r\n", i + 2)
                self._remaining = int(head[i + 17:j if j != -1 else None])
                self._state = 1
        if buf and not self.first_body_at:
            self.first_body_at = now
        if self._state == 1:
            if len(buf) >= self._remaining:
                self._body += buf[:self._remaining]
                del buf[:self._remaining]
                self._finish(now)
            return
        # chunked
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol == -1:
                break
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            if size == 0:
                if len(buf) < eol + 4:
                    break
                del buf[:eol + 4]
                self._finish(now)
            if len(buf) < eol + 2 + size + 2:
                break
            self._body += buf[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
        if pos:
            del buf[:pos]


async def _connect(host: str, port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(HttpConnection, host, port)
    return proto


async def run_load(
    host: str,
    port: int,
    make_request: Callable[[int], Request],
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    on_progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Drive `concurrency` closed-loop workers; request i is `make_request(i)`."""
    result = LoadResult()
    issued = 0
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker() -> None:
        nonlocal issued
        conn: HttpConnection | None = None
        while True:
            if issued >= max_requests or time.perf_counter() >= deadline:
                break
            index = issued
            issued += 1
            req = make_request(index)
            try:
                if conn is None or conn.closed:
                    conn = await _connect(host, port)
                sent = time.perf_counter()
                status, body, done = await conn.send(req.data)
                error = req.validate(status, body)
            except (OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                conn = None
                done = sent = time.perf_counter()
            result.requests += 1
            if error is not None:
                result.errors += 1
                if len(result.error_samples) < MAX_ERROR_SAMPLES:
                    result.error_samples.append(error)
            else:
                result.latencies_ms.append((done - sent) * 1000.0)
                if conn is not None and conn.first_body_at:
                    result.ttfb_ms.append((conn.first_body_at - sent) * 1000.0)
            if on_progress is not None:
                on_progress(result.requests)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    return result


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when available, else asyncio's default."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
