"""Message archive: one JSON line per exchange under messages/YYYY-MM-DD/<conversation>.jsonl.

Writes happen on a background thread; callers only append to its buffer. Entries never hold a
client or server key: callers pass only what is listed in SPEC.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from shared.background import BackgroundThread
from shared.file_modes import open_private, private_dir

log = logging.getLogger("nexusai.archive")

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def archive_path(root: Path, conversation_id: str, when: datetime) -> Path:
    """Where the line for `conversation_id` at `when` goes (names made filesystem-safe)."""
    day = when.astimezone(timezone.utc).strftime("%Y-%m-%d")
    name = _SAFE.sub("_", conversation_id)[:128] or "unknown"
    return root / day / f"{name}.jsonl"


class ArchiveWriter:
    """Appends archive entries from one background thread."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._entries: collections.deque[dict[str, Any]] = collections.deque()
        self._thread = BackgroundThread("archive-writer", self._run)
        self._pending = 0
        self._cond = threading.Condition()
        self._made_dirs: set[Path] = set()

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, entry: dict[str, Any]) -> None:
        """Queue one archive entry (must contain conversation_id and created_at)."""
        with self._cond:
            self._pending += 1
        self._entries.append(entry)
        self._thread.wake()

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued entry is on disk."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._thread.stop(timeout)

    def _run(self) -> None:
        entries = self._entries
        while True:
            while entries:
                entry = entries.popleft()
                try:
                    self._write(entry)
                except Exception:  # noqa: BLE001 - the archive must never take the proxy down
                    log.exception("archive write failed")
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()
            if self._thread.stopping:
                return
            self._thread.wait(1.0)

    def _write(self, entry: dict[str, Any]) -> None:
        when = entry.get("created_at")
        if not isinstance(when, datetime):
            when = datetime.now(timezone.utc)
        path = archive_path(self._root, str(entry.get("conversation_id") or "unknown"), when)
        if path.parent not in self._made_dirs:
            private_dir(self._root)
            private_dir(path.parent)
            self._made_dirs.add(path.parent)
        line = orjson.dumps(entry, default=str, option=orjson.OPT_UTC_Z) + b"\n"
        fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
