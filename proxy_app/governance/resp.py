"""A small pipelined Redis client for the limiter: one connection, RESP parsed by hiredis.

redis-py's asyncio client was measured at 78-130 µs of CPU per EVALSHA with 16 or
more callers (`python -m bench.redis_client`), so the two calls of a limited request
would cost 0.16-0.26 ms against a budget of 0.1 ms; this client, pipelining every call
on one connection and parsing with hiredis (Redis's own parser), costs 8-12 µs
(docs/benchmarks.md). It does only what the limiter needs: scripts by
SHA (loaded again when Redis forgot them), plain commands, AUTH and SELECT from the
URL, TLS for rediss://, unix sockets, and one deadline for every call.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis


class RedisTrouble(Exception):
    """Redis could not be reached, did not answer in time, or refused a command."""


class _Protocol(asyncio.Protocol):
    """Replies matched to calls in order (Redis answers a connection's commands in order)."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.out: list[bytes] = []  # commands of this loop iteration, not yet written

    def flush(self) -> None:
        """Write the commands queued this iteration in one go."""
        out, self.out = self.out, []
        if self.transport is not None and self.lost is None and out:
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not waiting:  # an answer nobody asked for: the stream is out of step
                self.fail(RedisTrouble("Redis sent an unexpected reply"))
                return
            future = waiting.popleft()[1]
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(RedisTrouble(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisTrouble(f"connection to Redis lost ({exc or 'closed by the server'})"))

    def fail(self, exc: BaseException) -> None:
        """Fail every call waiting on this connection, and close it."""
        self.lost = self.lost or exc
        while self.waiting:
            future = self.waiting.popleft()[1]
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class Resp:
    """Calls to one Redis server over one pipelined connection, (re)connected on demand."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.timeout_s = timeout_s
        self._unix = parts.path if parts.scheme == "unix" else None
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._tls = ssl.create_default_context() if parts.scheme == "rediss" else None
        query = parse_qs(parts.query)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else (query.get("password") or [""])[0] or None
        db = (query.get("db") or [""])[0] or (parts.path.strip("/") if parts.scheme != "unix" else "")
        self._db = int(db) if db else 0
        self._conn: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._scripts: dict[str, bytes] = {}  # sha -> source
        self._watchdog: asyncio.TimerHandle | None = None
        self.where = f"unix:{self._unix}" if self._unix else f"{self._host}:{self._port}"  # no credentials

    def script(self, source: str) -> str:
        """Register a Lua script; its SHA1 to pass to `evalsha`."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source.encode()
        return sha

    async def evalsha(self, sha: str, keys: tuple[str, ...], args: tuple[object, ...]) -> Any:
        """Run a registered script (loading it again if Redis restarted and forgot it)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except RedisTrouble as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.call("SCRIPT", "LOAD", self._scripts[sha])
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    async def pipeline(self, *calls: tuple[object, ...]) -> list[Any]:
        """Several commands in one round trip; their replies (RedisTrouble if any failed)."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connect()
        replies = await asyncio.gather(*(self._send(conn, args) for args in calls), return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    async def call(self, *args: object) -> Any:
        """One command; its reply, or RedisTrouble within the timeout."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connect()
        return await self._send(conn, args)

    def _send(self, conn: _Protocol, args: tuple[object, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        conn.waiting.append((time.monotonic() + self.timeout_s, future))
        # Written once per loop iteration: the calls of every request the iteration ran share a send().
        out = conn.out
        out.append(hiredis.pack_command(args))  # type: ignore[arg-type]
        if len(out) == 1:
            loop.call_soon(conn.flush)
        if self._watchdog is None:
            self._arm()
        return future

    def _arm(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(self.timeout_s / 2, self._check)

    def _check(self) -> None:
        # One timer for every call in flight (the oldest is first), instead of one per call.
        self._watchdog = None
        conn = self._conn
        if conn is None or not conn.waiting:
            return
        if conn.waiting[0][0] <= time.monotonic():
            conn.fail(RedisTrouble(f"Redis did not answer within {self.timeout_s:g} s"))
            return
        self._arm()

    async def _connect(self) -> _Protocol:
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            conn = await asyncio.wait_for(self._open(), self.timeout_s * 4)
        except (OSError, asyncio.TimeoutError, RedisTrouble) as exc:
            error = exc if isinstance(exc, RedisTrouble) else RedisTrouble(
                f"cannot connect to Redis at {self.where} ({type(exc).__name__}: {exc})")
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            self._connecting = None
            raise error from None
        self._conn = conn
        self._connecting.set_result(conn)
        self._connecting = None
        return conn

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._unix:
            _, conn = await loop.create_unix_connection(_Protocol, self._unix)
        else:
            _, conn = await loop.create_connection(_Protocol, self._host, self._port, ssl=self._tls)
        old, self._conn = self._conn, conn
        try:
            if self._password is not None:
                auth = ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
                await self._send(conn, auth)
            if self._db:
                await self._send(conn, ("SELECT", self._db))
        except BaseException:
            self._conn = old
            conn.fail(RedisTrouble("Redis refused the connection's AUTH or SELECT"))
            raise
        return conn

    async def close(self) -> None:
        """Close the connection (calls waiting on it fail)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._conn is not None:
            self._conn.fail(RedisTrouble("closed"))
            self._conn = None
