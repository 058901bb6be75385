"""Run the real proxy app on a real loopback socket, on its own thread and loop.

Lets sync clients (requests, the openai SDK) and async ones use the same
server; `stop()` runs the app's cleanup, which flushes usage and archive.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from proxy_app import create_app
from proxy_app.serving import ProxyRunner
from shared.settings import Settings

T = TypeVar("T")


class ProxyThread:
    """The proxy application served on 127.0.0.1 with a free port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._runner = ProxyRunner(self.app, settings)
        self.url = ""

    def start(self) -> ProxyThread:
        """Start serving; returns self."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the proxy's own loop (where its services live) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        """Graceful shutdown: finish requests, flush writers, end the thread (idempotent)."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
