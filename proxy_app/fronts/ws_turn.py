"""One chat request on a WebSocket: the exchange's events as `start`/`delta`/`usage`/`done` (or `error`).

Routing, failover, metering and recording are the exchange's, exactly as for HTTP;
a turn only renders. It ends with exactly one `done` or one `error`, and its
exchange is recorded once however it ends: completed, failed, cancelled by the
client, cut off by the socket closing, or stopped at shutdown.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from proxy_app.errors import ProxyError
from proxy_app.exchange import CLIENT_CLOSED, ClientGone, Exchange, Outcome, WholeReply
from proxy_app.fronts.ws_protocol import ChatId, Send, completion_messages, delta_messages, error_message
from proxy_app.hub import Piece

SHUTDOWN_STATUS = 503

# Why a turn was stopped before it ended by itself.
STOP_CANCEL = "cancel"  # the client sent {"type":"cancel"}
STOP_CLOSED = "closed"  # the socket closed
STOP_SHUTDOWN = "shutdown"  # the proxy is shutting down
STOP_RECORDS = {
    STOP_CANCEL: (CLIENT_CLOSED, "client_cancelled"),
    STOP_CLOSED: (CLIENT_CLOSED, "client_closed"),
    STOP_SHUTDOWN: (SHUTDOWN_STATUS, "server_shutdown"),
}


def server_shutting_down() -> ProxyError:
    """503: the proxy stopped this request because it is shutting down."""
    return ProxyError(
        SHUTDOWN_STATUS, "The gateway is shutting down; retry on a new connection.",
        type="server_error", code="server_shutting_down",
    )


class Turn:
    """One in-flight chat request of a WebSocket session; the renderer of its exchange."""

    def __init__(self, exchange: Exchange, chat_id: ChatId, send: Send) -> None:
        self.exchange = exchange
        self.chat_id = chat_id
        self._send = send
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: str | None = None
        self._started = False

    def stop(self, reason: str) -> None:
        """Stop the turn early; it records its usage before it ends."""
        if self.stop_reason is not None or self.task is None or self.task.done():
            return
        self.stop_reason = reason
        self.exchange.stop(*STOP_RECORDS[reason])
        # Not started yet: run() sees the reason first. Recording: let it complete.
        if self._started and not self.exchange.recording:
            self.task.cancel()

    async def run(self) -> None:
        """The task body: relay the exchange to the socket."""
        self._started = True
        try:
            if self.stop_reason is None:
                ex = self.exchange
                await self._send({"type": "start", "id": self.chat_id, "request_id": ex.request_id,
                                  "conversation_id": ex.conversation_id, "model": ex.model})
                await ex.run(self)
                return
        except asyncio.CancelledError:
            # Cancelled by anything but stop() (say, the loop tearing down): the socket is as good as gone.
            self.stop_reason = self.stop_reason or STOP_CLOSED
        except ClientGone:
            self.stop_reason = STOP_CLOSED
        await self._stopped()

    async def _stopped(self) -> None:
        reason = self.stop_reason or STOP_CLOSED
        ex = self.exchange
        if ex.recording:
            outcome = await ex.outcome()  # recorded (or being recorded) by the exchange itself
        else:
            outcome = await ex.close(*STOP_RECORDS[reason])
        if reason == STOP_CANCEL:
            await self._try_send(self._usage_message(outcome))
            await self._try_send({"type": "done", "id": self.chat_id, "finish_reason": "cancelled"})
        elif reason == STOP_SHUTDOWN:
            await self._try_send(error_message(self.chat_id, server_shutting_down(), ex.request_id))

    # --- the exchange's renderer -----------------------------------------------

    async def start_stream(self, exchange: Exchange) -> None:
        """Nothing to open: the `start` message went first."""

    async def pieces(self, exchange: Exchange, pieces: list[Piece], final: bool) -> None:
        """A `delta` per choice that carries content, reasoning or tool calls."""
        for piece in pieces:
            if piece.obj is not None:
                for message in delta_messages(self.chat_id, piece.obj):
                    await self._send(message)

    async def finished(self, exchange: Exchange, outcome: Outcome) -> None:
        """`usage`, then `done`."""
        await self._send(self._usage_message(outcome))
        await self._send({"type": "done", "id": self.chat_id, "finish_reason": exchange.meter.finish_reason})

    async def whole(self, exchange: Exchange, reply: WholeReply, outcome: Outcome) -> None:
        """An upstream error, or an upstream that ignored `stream` and sent one JSON reply."""
        if reply.status >= 400:
            error = orjson.loads(reply.body)["error"]
            await self._send({"type": "error", "id": self.chat_id, "status": reply.status, "error": error,
                              "request_id": exchange.request_id})
            return
        if reply.obj is not None:
            for message in completion_messages(self.chat_id, reply.obj):
                await self._send(message)
        await self.finished(exchange, outcome)

    async def failed(self, exchange: Exchange, error: ProxyError, outcome: Outcome) -> None:
        """This chat's `error`: the socket has no HTTP status to carry it."""
        await self._send(error_message(self.chat_id, error, exchange.request_id))

    # --- sending --------------------------------------------------------------

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

    async def _try_send(self, message: dict[str, Any]) -> None:
        try:
            await self._send(message)
        except ClientGone:
            pass
