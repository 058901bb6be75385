"""The proxy's HTTP server: aiohttp's, with connection and time limits and our error shape.

aiohttp parses the requests; this module decides what a connection may cost:
a cap on open connections (idle ones are closed first to make room), a deadline
for a new connection's first request headers, a keep-alive idle timeout, and
parser errors answered in OpenAI's shape and logged without the bytes that
caused them (they may hold a client key).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from proxy_app.errors import describe_parser_error, error_object
from proxy_app.exchange import new_request_id
from shared.settings import Settings

log = logging.getLogger("nexusai.proxy")

REFUSAL_LOG_INTERVAL_S = 10.0

def _error_body(message: str, type_: str, code: str) -> bytes:
    return orjson.dumps({"error": error_object(message, type_, code)})


class _Throttled:
    """Counts an event and logs it at most once per interval, with the count since the last line."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._count = 0
        self._last = float("-inf")

    def note(self, *args: object) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= REFUSAL_LOG_INTERVAL_S:
            log.warning(self._message, self._count, *args)
            self._count = 0
            self._last = now


# Descriptors kept beyond the connection cap: upstream connections, the database, logs, journal.
FD_HEADROOM = 512


def open_file_limit(wanted: int) -> int:
    """Raise the soft open-file limit toward `wanted` (up to the hard limit); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class ConnectionGuard:
    """The limits every connection of one server shares."""

    def __init__(self, settings: Settings) -> None:
        wanted = settings.proxy_max_connections
        limit = open_file_limit(wanted + FD_HEADROOM)
        # Past the descriptor limit accept() fails and every client is reset, silently: stay below it.
        self.max_connections = max(1, min(wanted, limit - FD_HEADROOM))
        if self.max_connections < wanted:
            log.warning("PROXY_MAX_CONNECTIONS=%d is above what the open-file limit (%d) allows; using %d",
                        wanted, limit, self.max_connections)
        self.header_timeout_s = settings.proxy_header_timeout_s
        self.refused = _Throttled("connection cap reached: refused %d connection(s) (PROXY_MAX_CONNECTIONS=%d)")
        self.evicted = _Throttled("connection cap reached: closed %d idle connection(s) to make room")
        self.timed_out = _Throttled("closed %d connection(s) that sent no complete request headers within %g s")


_BUSY = _error_body(
    "The gateway has too many open connections; retry shortly.", "server_error", "too_many_connections"
)
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY
)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol, under the ConnectionGuard's limits."""

    def __init__(self, manager: GuardedServer, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._refused = False
        self._opened = 0.0
        self._sent_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        assert isinstance(manager, GuardedServer)
        cap = self._guard.max_connections
        if (manager.open_connections() >= cap and manager.live_connections() >= cap
                and not manager.close_an_idle_connection()):
            self._refused = True
            self._guard.refused.note(self._guard.max_connections)
            assert isinstance(transport, asyncio.Transport)
            transport.write(_BUSY_RESPONSE)
            transport.close()
            return
        super().connection_made(transport)
        # A new connection gets the header deadline instead of the keep-alive timeout: aiohttp's own
        # idle check closes a connection whose next request has not fully arrived by then.
        loop = self._loop
        self._opened = loop.time()
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
        self._next_keepalive_close_time = self._opened + self._guard.header_timeout_s
        self._keepalive_handle = loop.call_at(self._next_keepalive_close_time, self._process_keepalive)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        super().connection_lost(exc)

    def _process_keepalive(self) -> None:
        waiting = self._request_count == 0 and self._waiter is not None and not self._waiter.done()
        super()._process_keepalive()
        if waiting and self._force_close:
            self._guard.timed_out.note(self._guard.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        """aiohttp's, noting that the client has sent something."""
        self._sent_bytes = True
        super().data_received(data)

    def is_idle(self) -> bool:
        """Waiting for its next request (or never having sent a byte), with nothing unread in the kernel."""
        if self._force_close or self._request_in_progress or self._messages:
            return False
        waiting = self._waiter is not None and not self._waiter.done()
        # A busy loop may not have started the handler task, nor read what arrived: ask the socket.
        return (waiting or not self._sent_bytes) and not self._unread_bytes()

    def _unread_bytes(self) -> bool:
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return False
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as peer:
                return bool(peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False
        except OSError:
            return True  # closed or broken: not ours to evict; its own handler will see it

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None,
    ) -> web.StreamResponse:
        """Answer in OpenAI's error shape; log what went wrong, never the request's bytes."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if isinstance(exc, (HttpProcessingError, BadHttpMessage)) or status == 400:
            status, text, code = describe_parser_error(exc)
            log.info("refused a malformed request from %s: %s", request.remote, type(exc).__name__)
            type_ = "invalid_request_error"
        elif status == 504:
            text, code, type_ = "The gateway timed out handling the request.", "timeout", "server_error"
        else:
            log.error("unhandled error serving a request from %s: %s", request.remote, type(exc).__name__)
            status, text, code, type_ = 500, "Internal error in the gateway.", "internal_error", "server_error"
        response = web.Response(status=status, body=_error_body(text, type_, code), content_type="application/json",
                                headers={"X-Request-Id": new_request_id()})
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's Server making GuardedRequestHandler connections."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)

    def open_connections(self) -> int:
        """Connections currently open (closing ones included)."""
        return len(self._connections)

    def live_connections(self) -> int:
        """Open connections not already being closed (a busy loop may not have seen them go yet)."""
        return sum(1 for handler in self._connections if not handler._force_close)

    def close_an_idle_connection(self) -> bool:
        """Close the oldest connection waiting for a request; False when every one is busy."""
        for handler in self._connections:
            if isinstance(handler, GuardedRequestHandler) and handler.is_idle():
                handler.force_close()
                self.guard.evicted.note()
                return True
        return False


class ProxyRunner(web.AppRunner):
    """AppRunner whose server enforces the ConnectionGuard."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", settings.proxy_keepalive_timeout_s)
        # A client that hangs up must cancel its handler (and so the upstream call) at once,
        # not at the next write: that is how an aborted stream is billed for what was sent.
        kwargs.setdefault("handler_cancellation", True)
        kwargs.setdefault("access_log", None)
        super().__init__(app, **kwargs)
        self.guard = ConnectionGuard(settings)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up
        kwargs = {k: v for k, v in self._kwargs.items() if k != "handler_cancellation"}
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=self._kwargs.get("handler_cancellation", False),
            loop=asyncio.get_running_loop(),
            guard=self.guard,
            **kwargs,
        )


def serve(
    app: web.Application, settings: Settings, sock: socket.socket, loop: asyncio.AbstractEventLoop,
    *, shutdown_timeout: float, on_ready: Callable[[], None],
) -> None:
    """Serve `app` on `sock` until SIGINT/SIGTERM, then shut down gracefully."""
    runner = ProxyRunner(app, settings, shutdown_timeout=shutdown_timeout)
    stop = asyncio.Event()

    async def main() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        on_ready()
        await stop.wait()

    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(runner.cleanup())
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
