"""One chat request on a WebSocket, run through the shared exchange core.

The upstream call, failover, metering, usage row, archive line and access log
are `exchange`/`upstream`/`meter`, exactly as for HTTP; this module only turns
the upstream stream into `start`/`delta`/`usage`/`done` (or `error`) messages.
A turn records itself exactly once, however it ends: completed, failed,
cancelled by the client, cut off by the socket closing, or stopped at shutdown.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from proxy_app.chat_http import CLIENT_CLOSED
from proxy_app.config import Route
from proxy_app.errors import ProxyError, stream_failure, upstream_error_body
from proxy_app.exchange import ChatCall, Outcome, finish, proxy_error_status, release
from proxy_app.meter import Meter
from proxy_app.sse import iter_events, parse_event
from proxy_app.state import ProxyState
from proxy_app.upstream import UpstreamFailure, open_upstream
from proxy_app.upstream_http import UpstreamHTTPError, UpstreamResponse
from proxy_app.ws_protocol import ChatId, ClientGone, Send, completion_messages, delta_messages, error_message

SHUTDOWN_STATUS = 503

# Why a turn was stopped before it ended by itself.
STOP_CANCEL = "cancel"  # the client sent {"type":"cancel"}
STOP_CLOSED = "closed"  # the socket closed
STOP_SHUTDOWN = "shutdown"  # the proxy is shutting down


def server_shutting_down() -> ProxyError:
    """503: the proxy stopped this request because it is shutting down."""
    return ProxyError(
        SHUTDOWN_STATUS, "The gateway is shutting down; retry on a new connection.",
        type="server_error", code="server_shutting_down",
    )


class Turn:
    """One in-flight chat request of a WebSocket session."""

    def __init__(self, state: ProxyState, call: ChatCall, chat_id: ChatId, send: Send) -> None:
        self.state = state
        self.call = call
        self.chat_id = chat_id
        self._send = send
        self.meter = Meter()
        self.route: Route = call.routes[0]
        self.upstream: UpstreamResponse | None = None
        self.delivered = False
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: str | None = None
        self._started = False
        self._recording = False
        self._outcome: Outcome | None = None

    def stop(self, reason: str) -> None:
        """Stop the turn early; it records its usage before it ends."""
        if self.stop_reason is not None or self.task is None or self.task.done():
            return
        self.stop_reason = reason
        # Not started yet: run() sees the reason first. Recording: let it complete.
        if self._started and not self._recording:
            self.task.cancel()

    async def run(self) -> None:
        """Relay the exchange to the socket; the task body."""
        self._started = True
        try:
            await self._run()
        finally:
            release(self.state, self.call)

    async def _run(self) -> None:
        try:
            if self.stop_reason is None:
                await self._emit({"type": "start", "id": self.chat_id, "request_id": self.call.request_id,
                                  "conversation_id": self.call.conversation_id, "model": self.call.model})
                await self._exchange()
                return
        except asyncio.CancelledError:
            # Cancelled by anything but stop() (say, the loop tearing down): the socket is as good as gone.
            self.stop_reason = self.stop_reason or STOP_CLOSED
        except ClientGone:
            self.stop_reason = STOP_CLOSED
        self._close_upstream()
        await self._stopped()

    async def _exchange(self) -> None:
        state, call = self.state, self.call
        try:
            reply = await open_upstream(
                state.upstream, call.routes, call.body, True, call.request_id, state.settings.upstream_max_attempts,
            )
        except UpstreamFailure as exc:
            self.route = exc.route
            status, error_type = proxy_error_status(exc)
            await self._record(status, error_type, delivered_any=False)
            await self._emit(error_message(self.chat_id, exc, call.request_id))
            return
        self.route = reply.route
        self.upstream = reply.response
        try:
            if reply.response.status == 200 and reply.response.content_type == "text/event-stream":
                await self._relay_stream()
            else:
                await self._relay_whole()
        finally:
            reply.response.release()

    async def _relay_stream(self) -> None:
        assert self.upstream is not None
        meter = self.meter
        try:
            async for raw in iter_events(self.upstream.iter_any()):
                obj = parse_event(raw)
                if meter.ttft_ms is None:
                    meter.ttft_ms = (time.perf_counter() - self.call.started) * 1000.0
                self.delivered = True
                if not isinstance(obj, dict):
                    continue
                upstream_error = obj.get("error")
                if isinstance(upstream_error, dict):
                    # An error event mid-stream: the socket has no HTTP status to carry it, so it
                    # becomes this chat's `error` (and an error row), never a silent `done`.
                    message = str(upstream_error.get("message") or "The upstream failed mid-stream.")
                    await self._fail(ProxyError(502, message, type="upstream_error",
                                                code=str(upstream_error.get("code") or "upstream_error")),
                                     self.delivered)
                    return
                meter.take_usage(obj)
                meter.add_chunk(obj)
                for message in delta_messages(self.chat_id, obj):
                    await self._emit(message)
        except (UpstreamHTTPError, TimeoutError) as exc:
            await self._fail(stream_failure(exc, self.route.provider.name), self.delivered)
            return
        await self._complete(200, delivered_any=self.delivered)

    async def _relay_whole(self) -> None:
        """An upstream error, or an upstream that ignored `stream` and sent one JSON reply."""
        assert self.upstream is not None
        response = self.upstream
        try:
            raw = await response.read()
        except (UpstreamHTTPError, TimeoutError) as exc:
            await self._fail(stream_failure(exc, self.route.provider.name), False)
            return
        self.meter.ttft_ms = (time.perf_counter() - self.call.started) * 1000.0
        status = response.status
        if status >= 400:
            provider = self.route.provider
            error = orjson.loads(upstream_error_body(status, raw, provider.name, provider.server_key))["error"]
            await self._record(status, "upstream_error", delivered_any=False)
            await self._emit({"type": "error", "id": self.chat_id, "status": status, "error": error,
                              "request_id": self.call.request_id})
            return
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            self.meter.add_completion(parsed)
            for message in completion_messages(self.chat_id, parsed):
                await self._emit(message)
        await self._complete(status, delivered_any=True)

    async def _complete(self, status: int, delivered_any: bool) -> None:
        outcome = await self._record(status, None, delivered_any)
        await self._emit(self._usage_message(outcome))
        await self._emit({"type": "done", "id": self.chat_id, "finish_reason": self.meter.finish_reason})

    async def _fail(self, exc: ProxyError, delivered_any: bool) -> None:
        await self._record(exc.status, exc.code, delivered_any)
        await self._emit(error_message(self.chat_id, exc, self.call.request_id))

    async def _stopped(self) -> None:
        if self.stop_reason == STOP_CANCEL:
            outcome = await self._record(CLIENT_CLOSED, "client_cancelled", self.delivered)
            await self._try_emit(self._usage_message(outcome))
            await self._try_emit({"type": "done", "id": self.chat_id, "finish_reason": "cancelled"})
        elif self.stop_reason == STOP_SHUTDOWN:
            exc = server_shutting_down()
            await self._record(exc.status, "server_shutdown", self.delivered)
            await self._try_emit(error_message(self.chat_id, exc, self.call.request_id))
        else:
            await self._record(CLIENT_CLOSED, "client_closed", self.delivered)

    async def _record(self, status: int, error_type: str | None, delivered_any: bool) -> Outcome:
        if self._outcome is None:
            self._recording = True
            self._outcome = await finish(
                self.state, self.call, self.route, self.meter, status, error_type, delivered_any
            )
        return self._outcome

    def _usage_message(self, outcome: Outcome) -> dict[str, Any]:
        usage = outcome.usage
        return {
            "type": "usage",
            "id": self.chat_id,
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                      "total_tokens": usage.total_tokens},
            "token_source": usage.source,
            "cost_usd": float(outcome.cost_usd or 0),
        }

    async def _emit(self, message: dict[str, Any]) -> None:
        await self._send(message)

    async def _try_emit(self, message: dict[str, Any]) -> None:
        try:
            await self._send(message)
        except ClientGone:
            pass

    def _close_upstream(self) -> None:
        # Closing (not releasing) drops the connection, which cancels the upstream's work.
        if self.upstream is not None:
            self.upstream.close()
