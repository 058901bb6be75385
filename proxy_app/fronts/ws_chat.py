"""GET /ws/chat: real-time chat over one WebSocket, several requests at once.

Authentication happens after the upgrade, so that a browser (which can neither
set headers nor read a refused handshake) is told why: the key comes from the
headers or `?api_key=` like HTTP, or from a first `{"type":"auth"}` message.
Each `chat` message becomes an exchange rendered by a `Turn` (see `ws_turn`); live sessions are kept in
an app key so that shutdown can stop their turns, flush usage and close them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from proxy_app.app_keys import STATE, WS_SESSIONS
from proxy_app.auth import authenticate, extract_key
from proxy_app.cors import origin_allowed
from proxy_app.errors import ProxyError, bad_request, echo
from proxy_app.exchange import new_conversation_id, new_request_id, open_exchange
from proxy_app.exchange.state import ProxyState
from proxy_app.fronts.chat import CHAT
from proxy_app.fronts.json_body import parse_json
from proxy_app.fronts.ws_protocol import CLOSE_AUTH_FAILED, ChatId, ClientGone, Message, error_message, parse_chat_id
from proxy_app.fronts.ws_turn import STOP_CANCEL, STOP_CLOSED, STOP_SHUTDOWN, Turn, server_shutting_down

log = logging.getLogger("nexusai.proxy.ws")
access_log = logging.getLogger("nexusai.proxy.access")

HEARTBEAT_S = 20.0
CLOSE_TIMEOUT_S = 5.0
# Messages over the setting get an `error`; aiohttp drops the connection (1009) only far beyond it.
HARD_LIMIT_FACTOR = 4
SHUTDOWN_DRAIN_S = 10.0
PROTOCOL_FIELDS = ("type", "id")


async def ws_chat(request: web.Request) -> web.StreamResponse:
    """Upgrade to a WebSocket and serve chat requests on it until it closes."""
    state = request.app[STATE]
    limit = state.settings.ws_max_message_bytes
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_S, timeout=CLOSE_TIMEOUT_S, max_msg_size=limit * HARD_LIMIT_FACTOR,
    )
    if not ws.can_prepare(request).ok:
        raise ProxyError(
            426, "This endpoint speaks WebSocket only: send a WebSocket upgrade request.",
            code="upgrade_required", headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )
    allowed = state.settings.cors_origins
    origin = request.headers.get("Origin")
    if allowed and origin is not None and not origin_allowed(allowed, origin):
        # A page on another origin: the same list as CORS decides (clients outside browsers send none).
        raise ProxyError(403, "This origin may not open the WebSocket (CORS_ORIGINS).", type="permission_error",
                         code="origin_not_allowed")
    raw_key = extract_key(request.headers, request.query)
    # The socket's own id, on its 101 and its access line; each chat on it is an exchange with its own.
    session = WsSession(state, ws, new_request_id())
    ws.headers["X-Request-Id"] = session.id
    started = time.perf_counter()
    await ws.prepare(request)
    sessions = request.app[WS_SESSIONS]
    sessions.add(session)
    try:
        if await session.authenticate(raw_key):
            await session.serve()
    finally:
        session.stop_all(STOP_CLOSED)
        sessions.discard(session)
        access_log.info("%s ws /ws/chat status=101 chats=%d close=%s duration_ms=%.1f", session.id,
                        session.chats, ws.close_code, (time.perf_counter() - started) * 1000.0)
    return ws


async def close_websockets(app: web.Application) -> None:
    """on_shutdown: stop every socket's turns, flush their usage, then close with 1001."""
    live: set[WsSession] = app[WS_SESSIONS]
    sessions = list(live)
    if not sessions:
        return
    for session in sessions:
        session.closing = True
        session.stop_all(STOP_SHUTDOWN)
    tasks = [t.task for s in sessions for t in s.turns.values() if t.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=SHUTDOWN_DRAIN_S)
    state = app[STATE]
    loop = asyncio.get_running_loop()
    # Waiting on the writer threads blocks: do it on a worker, never on the loop.
    await loop.run_in_executor(None, state.usage.wait_idle, SHUTDOWN_DRAIN_S)
    await loop.run_in_executor(None, state.archive.wait_idle, SHUTDOWN_DRAIN_S)
    closes = [
        asyncio.ensure_future(s.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down"))
        for s in sessions
    ]
    # Bounded: a client that stops reading must not hold up shutdown (the server drops it later).
    await asyncio.wait(closes, timeout=CLOSE_TIMEOUT_S * 2)
    log.info("closed %d WebSocket session(s) for shutdown", len(sessions))


class WsSession:
    """One authenticated socket: dispatches client messages and owns its turns."""

    def __init__(self, state: ProxyState, ws: web.WebSocketResponse, session_id: str) -> None:
        self.state = state
        self.ws = ws
        self.id = session_id
        self.chats = 0  # chat requests started on the socket
        self.turns: dict[ChatId, Turn] = {}
        # Turns without their own conversation id share the socket's.
        self.conversation_id = new_conversation_id()
        self.closing = False
        self._raw_key = ""

    async def send(self, message: Message) -> None:
        """Send one JSON message; ClientGone when the socket has closed."""
        try:
            await self.ws.send_str(orjson.dumps(message).decode())
        except ConnectionResetError as exc:
            raise ClientGone from exc

    async def send_error(self, chat_id: ChatId | None, exc: ProxyError) -> None:
        """Answer a message with an `error` (the socket stays open)."""
        try:
            await self.send(error_message(chat_id, exc))
        except ClientGone:
            pass

    def stop_all(self, reason: str) -> None:
        """Stop every turn in flight (each records its own usage)."""
        for turn in list(self.turns.values()):
            turn.stop(reason)

    # --- authentication ---------------------------------------------------

    async def authenticate(self, raw_key: str | None) -> bool:
        """Check the key from the handshake or the first message; close 4401 when refused."""
        if raw_key is None:
            raw_key = await self._auth_message()
            if raw_key is None:
                return False
        try:
            authenticate(self.state.config.snapshot, raw_key)
        except ProxyError as exc:
            await self._refuse(exc)
            return False
        self._raw_key = raw_key
        return True

    async def _auth_message(self) -> str | None:
        timeout = self.state.settings.ws_auth_timeout_s
        try:
            msg = await self.ws.receive(timeout=timeout)
        except asyncio.TimeoutError:
            await self._refuse(ProxyError(
                401, f"No API key: send {{\"type\":\"auth\",\"api_key\":…}} within {timeout:g} s of connecting, "
                "or pass the key as 'Authorization: Bearer', 'X-API-Key' or '?api_key='.", code="invalid_api_key",
            ))
            return None
        if msg.type != WSMsgType.TEXT:
            if msg.type == WSMsgType.BINARY:
                await self._refuse(ProxyError(401, "Expected an auth message as JSON text.", code="invalid_api_key"))
            return None
        try:
            obj = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            obj = None
        key = obj.get("api_key") if isinstance(obj, dict) and obj.get("type") == "auth" else None
        if not isinstance(key, str) or not key.strip():
            await self._refuse(ProxyError(
                401, "The first message must be {\"type\":\"auth\",\"api_key\":\"<key>\"} "
                "when the key is not in the headers or '?api_key='.", code="invalid_api_key",
            ))
            return None
        return key.strip()

    async def _refuse(self, exc: ProxyError) -> None:
        access_log.info("%s ws /ws/chat status=%d code=%s", self.id, exc.status, exc.code)
        await self.send_error(None, exc)
        await self.ws.close(code=CLOSE_AUTH_FAILED, message=(exc.code or "unauthorized").encode())

    # --- messages -----------------------------------------------------------

    async def serve(self) -> None:
        """Handle client messages until the socket closes."""
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await self.send_error(None, bad_request(
                    "Binary frames are not supported; send JSON text messages.", code="unsupported_frame",
                ))
            elif msg.type == WSMsgType.ERROR:
                log.info("WebSocket closed with an error: %s", self.ws.exception())
                break

    async def _on_text(self, data: str) -> None:
        limit = self.state.settings.ws_max_message_bytes
        if len(data) > limit or (len(data) * 4 > limit and len(data.encode("utf-8")) > limit):
            await self.send_error(None, ProxyError(
                413, f"Message exceeds the limit of {limit} bytes.", code="request_too_large",
            ))
            return
        try:
            obj = parse_json(data, "message")
        except ProxyError as exc:
            await self.send_error(None, exc)
            return
        if not isinstance(obj, dict):
            await self.send_error(None, bad_request("A message must be a JSON object with a 'type'."))
            return
        kind = obj.get("type")
        raw_id = obj.get("id")
        echo_id = raw_id if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None
        try:
            if kind == "chat":
                await self._on_chat(obj)
            elif kind == "cancel":
                self._on_cancel(obj)
            elif kind == "ping":
                await self.send({"type": "pong", "id": echo_id} if echo_id is not None else {"type": "pong"})
            elif kind == "auth":
                raise bad_request("This socket is already authenticated.", code="already_authenticated")
            else:
                raise bad_request(
                    f"Unknown message type '{echo(kind)}'; expected 'chat', 'cancel' or 'ping'.",
                    param="type", code="unknown_message_type",
                )
        except ProxyError as exc:
            await self.send_error(echo_id, exc)

    async def _on_chat(self, obj: dict[str, Any]) -> None:
        chat_id = parse_chat_id(obj.get("id"))
        if chat_id in self.turns:
            raise bad_request(f"A request with id {chat_id!r} is already in flight on this socket.",
                              param="id", code="duplicate_id")
        if self.closing:
            raise server_shutting_down()
        state = self.state
        limit = state.settings.ws_max_concurrent_chats
        if len(self.turns) >= limit:
            raise ProxyError(
                429, f"At most {limit} chat requests may run at once on one socket; wait for one to finish.",
                type="rate_limit_error", code="too_many_concurrent_chats",
            )
        # Re-checked per request: a key revoked while the socket is open stops working here.
        key = authenticate(state.config.snapshot, self._raw_key)
        body = {k: v for k, v in obj.items() if k not in PROTOCOL_FIELDS}
        body["stream"] = True  # always stream from upstream: deltas go out as they arrive
        exchange = await open_exchange(
            state, CHAT, key, body, conversation_header=None, transport="ws",
            default_conversation=self.conversation_id,
        )
        turn = Turn(exchange, chat_id, self.send)
        self.turns[chat_id] = turn
        self.chats += 1
        task = asyncio.get_running_loop().create_task(turn.run(), name=f"ws-chat-{exchange.request_id}")
        turn.task = task
        # In the app's background set, so shutdown waits for the turn to record itself.
        state.background.add(task)
        task.add_done_callback(state.background.discard)
        task.add_done_callback(lambda _t: self._forget(turn))

    def _on_cancel(self, obj: dict[str, Any]) -> None:
        chat_id = parse_chat_id(obj.get("id"))
        turn = self.turns.get(chat_id)
        if turn is None:
            raise bad_request(f"No request with id {chat_id!r} is in flight on this socket.",
                              param="id", code="unknown_id")
        turn.stop(STOP_CANCEL)

    def _forget(self, turn: Turn) -> None:
        if self.turns.get(turn.chat_id) is turn:
            del self.turns[turn.chat_id]
