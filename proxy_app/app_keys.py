"""Every typed key of the proxy: app keys and per-request keys, in one place."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy_app.config import KeyCfg
from proxy_app.exchange.state import ProxyState
from shared.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", ProxyState)
# Live /ws/chat sockets, closed (after their usage is flushed) on shutdown.
# (Of fronts.ws_chat.WsSession, which is not named here: app keys sit below every front.)
WS_SESSIONS: web.AppKey[set[Any]] = web.AppKey("ws_sessions")

CLIENT_KEY = web.RequestKey("client_key", KeyCfg)
