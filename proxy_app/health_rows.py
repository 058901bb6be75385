"""The proxy's provider health, written to `provider_health` for the admin to read.

Every few seconds (on a worker thread, never the loop) this process replaces its own
rows with its breakers' report, and removes rows a process left behind more than an
hour ago (one that was killed). A report unchanged since the last write is written
again only every other interval, which keeps the rows within the admin's freshness
window (three intervals) while an idle proxy costs its database almost nothing. On
shutdown its rows are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, delete, insert

from proxy_app.governance.breaker import Breakers
from shared.models import ProviderHealth

log = logging.getLogger("nexusai.proxy.health")

WRITE_INTERVAL_S = 5.0
ABANDONED_AFTER = timedelta(hours=1)
MAX_ERROR_CHARS = 500


def instance_name() -> str:
    """This process, as its rows name it: host and pid."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}"


def _rows(instance: str, report: dict[int, dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for provider_id, entry in report.items():
        last_at = entry["last_error_at"]
        error = entry["last_error"]
        rows.append({
            "instance": instance,
            "provider_id": provider_id,
            "provider_name": str(entry["name"])[:100],
            "state": entry["state"],
            "models": entry["models"],
            "requests": entry["requests"],
            "errors": entry["errors"],
            "latencies_ms": [round(v, 3) for v in entry["latencies_ms"]],
            "in_flight": entry["busy"],
            "last_error": str(error)[:MAX_ERROR_CHARS] if error is not None else None,
            "last_error_at": datetime.fromtimestamp(last_at, timezone.utc) if last_at is not None else None,
            "updated_at": now,
        })
    return rows


class HealthRows:
    """Writes this process's provider health every WRITE_INTERVAL_S."""

    def __init__(self, engine: Engine, breakers: Breakers, interval_s: float = WRITE_INTERVAL_S) -> None:
        self.engine = engine
        self.breakers = breakers
        self.interval_s = interval_s
        self.instance = instance_name()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._failing = False
        self._last_report: dict[int, dict[str, Any]] | None = None
        self._skipped = 0

    def write(self, report: dict[int, dict[str, Any]]) -> None:
        """Replace this process's rows with `report` (blocking: call from a thread)."""
        now = datetime.now(timezone.utc)
        rows = _rows(self.instance, report, now)
        with self.engine.begin() as conn:
            conn.execute(delete(ProviderHealth).where(ProviderHealth.instance == self.instance))
            conn.execute(delete(ProviderHealth).where(ProviderHealth.updated_at < now - ABANDONED_AFTER))
            if rows:
                conn.execute(insert(ProviderHealth), rows)

    def clear(self) -> None:
        """Delete this process's rows (blocking)."""
        with self.engine.begin() as conn:
            conn.execute(delete(ProviderHealth).where(ProviderHealth.instance == self.instance))

    def start(self) -> None:
        """Write in the background until `stop`."""
        self._task = asyncio.create_task(self._run(), name="health-rows")

    async def stop(self) -> None:
        """Stop writing and take this process's rows away."""
        self._stopping.set()
        if self._task is not None:
            await self._task  # a write on its thread finishes first
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.clear)
        except Exception as exc:  # noqa: BLE001 - the rows age out instead
            log.warning("could not remove this process's provider health rows: %s", type(exc).__name__)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
                return
            except asyncio.TimeoutError:
                pass
            report = self.breakers.report()
            if not report:
                continue
            if report == self._last_report and self._skipped < 1:
                self._skipped += 1
                continue
            self._last_report, self._skipped = report, 0
            try:
                await loop.run_in_executor(None, self.write, report)
                if self._failing:
                    self._failing = False
                    log.info("provider health rows written again")
            except Exception as exc:  # noqa: BLE001 - health reporting must never take the proxy down
                if not self._failing:
                    self._failing = True
                    log.warning("provider health rows not written: %s", type(exc).__name__)
