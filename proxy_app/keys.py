"""Every typed `web.AppKey` of the proxy, in one place."""

from __future__ import annotations

from aiohttp import web

from shared.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
