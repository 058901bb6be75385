"""Every typed key of the proxy: app keys and per-request keys, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from proxy_app.config import KeyCfg
from proxy_app.exchange.state import ProxyState
from shared.settings import Settings

if TYPE_CHECKING:
    from proxy_app.fronts.ws_chat import WsSession

SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", ProxyState)
# Live /ws/chat sockets, closed (after their usage is flushed) on shutdown.
WS_SESSIONS: web.AppKey[set[WsSession]] = web.AppKey("ws_sessions")

CLIENT_KEY = web.RequestKey("client_key", KeyCfg)
