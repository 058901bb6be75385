"""Every typed key of the proxy: app keys and per-request keys, in one place."""

from __future__ import annotations

from aiohttp import web

from proxy_app.config import KeyCfg
from proxy_app.state import ProxyState
from shared.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", ProxyState)

CLIENT_KEY = web.RequestKey("client_key", KeyCfg)
