"""Background writer of usage records: batched, retried, flushed on stop.

The proxy's event loop only calls `submit()`, a non-blocking queue put; a
dedicated thread does every database round trip.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from shared.models import ApiKey, UsageRecord

log = logging.getLogger("nexusai.usage")

Record = dict[str, Any]
_STOP = object()


class UsageWriter:
    """Queues usage rows and inserts them in batches from one thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval_s: float = 0.5,
        batch_size: int = 500,
        spill_path: Path | None = None,
        on_written: Callable[[list[Record]], None] | None = None,
    ) -> None:
        self._engine = engine
        self._interval = flush_interval_s
        self._batch_size = batch_size
        self._spill_path = spill_path
        self._on_written = on_written
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._idle = threading.Condition(self._pending_lock)
        self._stopping = threading.Event()
        self._last_write = 0.0
        self.written = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one usage row (never blocks)."""
        with self._pending_lock:
            self._pending += 1
        self._queue.put(dict(record))

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted row is written (for shutdown and tests)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Flush everything queued, then stop the thread."""
        self._queue.put(_STOP)
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Record] = []
            try:
                item = self._queue.get(timeout=self._interval)
            except queue.Empty:
                continue
            if item is _STOP:
                stopping = True
            else:
                batch.append(item)
            stopping = self._drain(batch) or stopping
            linger = self._interval - (time.monotonic() - self._last_write)
            if not stopping and len(batch) < self._batch_size and linger > 0:
                # Under steady traffic, at most one transaction per interval (a commit per row
                # cost more than the request); after a quiet interval, rows go out at once.
                self._stopping.wait(linger)
                stopping = self._drain(batch)
            if batch:
                self._write_with_retry(batch, final=stopping)
                self._last_write = time.monotonic()

    def _drain(self, batch: list[Record]) -> bool:
        """Move what is already queued into `batch`, up to one batch; True when _STOP was seen."""
        stopping = False
        while len(batch) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stopping = True
                continue
            batch.append(item)
        return stopping

    def _write_with_retry(self, batch: list[Record], final: bool) -> None:
        delay = 0.2
        attempts = 0
        while True:
            attempts += 1
            try:
                self._write(batch)
                break
            except Exception as exc:  # noqa: BLE001 - outages are retried, refused rows set aside
                log.error("usage write of %d rows failed (attempt %d): %s", len(batch), attempts, type(exc).__name__)
                if not is_outage(exc):
                    # The database refused the data itself: write the rows one by one, so a single
                    # bad row cannot hold back (and, retried forever, lose) everyone else's.
                    self._write_each(batch)
                    break
                if (final or self._stopping.is_set()) and attempts >= 5:
                    self._spill(batch, "database unavailable at shutdown")
                    break
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        with self._idle:
            self._pending -= len(batch)
            self.written += len(batch)
            self._idle.notify_all()
        if self._on_written is not None:
            try:
                self._on_written(batch)
            except Exception:  # noqa: BLE001
                log.exception("usage on_written callback failed")

    def _write(self, batch: list[Record]) -> None:
        last_used: dict[int, datetime] = {}
        for row in batch:
            key_id = row.get("key_id")
            if key_id is not None:
                created = row["created_at"]
                if key_id not in last_used or created > last_used[key_id]:
                    last_used[key_id] = created
        with Session(self._engine) as session, session.begin():
            session.execute(insert(UsageRecord), batch)
            for key_id, when in last_used.items():
                session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))

    def _write_each(self, batch: list[Record]) -> None:
        for row in batch:
            try:
                self._write([row])
            except Exception as exc:  # noqa: BLE001
                log.error("usage row %s refused by the database: %s", row.get("request_id"), type(exc).__name__)
                self._spill([row], "refused by the database")

    def _spill(self, batch: list[Record], reason: str) -> None:
        # Last resort: keep rows the database would not take on disk, for an operator to replay.
        if self._spill_path is None:
            log.error("dropping %d usage rows: %s", len(batch), reason)
            return
        self._spill_path.parent.mkdir(parents=True, exist_ok=True)
        with self._spill_path.open("ab") as fh:
            for row in batch:
                # json, not orjson: it escapes the lone surrogates that may be why the row was refused.
                fh.write(json.dumps(row, default=str).encode("ascii") + b"\n")
        log.error("%d usage rows %s: saved to %s", len(batch), reason, self._spill_path)


def is_outage(exc: BaseException) -> bool:
    """Whether a write failed because the database is unreachable (retry) rather than the data."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
