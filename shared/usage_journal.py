"""The crash-safe usage journal, and the recorder that moves it into the database.

The proxy's event loop hands every usage row to the kernel before the client's
reply completes: one `write()` of a JSON line to an O_APPEND segment file.
From then on a killed process loses nothing (an unsynced page cache can still
be lost with the machine; see the README). A recorder thread reads the journal
back, inserts the rows in batches (idempotently: `request_id` is unique, so a
replayed row is never written twice), then checkpoints how far it got and
deletes the segments it has finished. A database outage leaves rows on disk,
not in memory; at the next start the recorder carries on from its checkpoint.

Layout under the journal directory (files 0600, directories 0700):

    slot-0/lock                      flock()ed by the process that owns the slot
    slot-0/000000000007.jsonl        segments, one JSON usage row per line
    slot-0/checkpoint                "<segment> <offset>": recorded up to there
    refused.jsonl                    rows the database refused (for an operator)

One process owns one slot; a slot no live process holds (a crashed worker's)
is drained by the next recorder that starts.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from shared.background import BackgroundThread
from shared.file_modes import open_private, private_dir
from shared.models import ApiKey, UsageRecord

log = logging.getLogger("nexusai.usage")

Record = dict[str, Any]
Position = tuple[int, int]  # (segment number, byte offset)

SEGMENT_BYTES = 8 * 1024 * 1024
SEGMENT_SUFFIX = ".jsonl"
READ_CHUNK = 1024 * 1024
# Rows whose JSON form is not their database form.
_DECODERS: dict[str, Callable[[Any], Any]] = {"created_at": datetime.fromisoformat, "cost_usd": Decimal}


class JournalError(RuntimeError):
    """The journal directory cannot be used."""


def _encode(row: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(row, default=str) + b"\n"
    except orjson.JSONEncodeError:
        # Lone surrogates: json escapes them, so the row still reaches the refused file intact.
        return json.dumps(row, default=str).encode("ascii") + b"\n"


def _decode(line: bytes) -> Record | None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            row = json.loads(line)
        except ValueError:
            return None
    if not isinstance(row, dict):
        return None
    for name, decode in _DECODERS.items():
        value = row.get(name)
        if isinstance(value, str):
            try:
                row[name] = decode(value)
            except (ValueError, ArithmeticError):
                return None
    return row


def is_outage(exc: BaseException) -> bool:
    """Whether a write failed because the database is unreachable (retry) rather than the data."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _segments(slot: Path) -> list[int]:
    numbers = []
    for entry in slot.glob("*" + SEGMENT_SUFFIX):
        try:
            numbers.append(int(entry.name[: -len(SEGMENT_SUFFIX)]))
        except ValueError:
            continue
    return sorted(numbers)


def _newest_segment(slot: Path) -> int:
    return max(_segments(slot), default=0)


def _segment_path(slot: Path, number: int) -> Path:
    return slot / f"{number:012d}{SEGMENT_SUFFIX}"


def _read_checkpoint(slot: Path) -> Position:
    try:
        segment, offset = (slot / "checkpoint").read_text().split()
        return int(segment), int(offset)
    except (OSError, ValueError):
        return 0, 0


def _write_checkpoint(slot: Path, position: Position) -> None:
    tmp = slot / "checkpoint.tmp"
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, f"{position[0]} {position[1]}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, slot / "checkpoint")


def _try_lock(slot: Path) -> int | None:
    """An fd holding the slot's lock, or None when another live process holds it."""
    private_dir(slot)
    fd = open_private(slot / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def backlog(root: Path) -> int:
    """How many journaled rows are not yet recorded, over every slot (for shutdown reports)."""
    total = 0
    if not root.is_dir():
        return 0
    for slot in sorted(root.glob("slot-*")):
        segment, offset = _read_checkpoint(slot)
        for number in _segments(slot):
            if number < segment:
                continue
            try:
                with _segment_path(slot, number).open("rb") as fh:
                    if number == segment:
                        fh.seek(offset)
                    data = fh.read()
            except OSError:
                continue
            total += data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return total


class _Cursor:
    """Reads one slot's segments from its checkpoint, a batch at a time."""

    def __init__(self, slot: Path, sealed_before: Callable[[], int]) -> None:
        self.slot = slot
        self.sealed_before = sealed_before  # segments numbered below this get no more lines
        self.position = _read_checkpoint(slot)  # everything before it is recorded
        self._next = self.position  # where the next unread line starts
        self._buffer = b""  # bytes read from the segment; those from _start on are unread
        self._start = 0
        self._file_offset = self.position[1]  # where in segment _next[0] the buffer ends

    def read(self, limit: int) -> tuple[list[Record], list[bytes], Position]:
        """Up to `limit` rows after the last read, the undecodable lines, and the position after them."""
        rows: list[Record] = []
        bad: list[bytes] = []
        while len(rows) < limit:
            newline = self._buffer.find(b"\n", self._start)
            if newline < 0:
                if not self._fill():
                    break
                continue
            line = self._buffer[self._start:newline]
            self._next = (self._next[0], self._next[1] + newline + 1 - self._start)
            self._start = newline + 1
            if line.strip():
                row = _decode(line)
                if row is None:
                    bad.append(line)
                else:
                    rows.append(row)
        return rows, bad, self._next

    def advance(self, position: Position) -> None:
        """Mark everything before `position` recorded; delete the segments wholly before it."""
        self.position = position
        _write_checkpoint(self.slot, position)
        for number in _segments(self.slot):
            if number < position[0]:
                _segment_path(self.slot, number).unlink(missing_ok=True)

    def _fill(self) -> bool:
        segment = self._next[0]
        # Decided before reading: once sealed, every write to the segment happened before this read.
        sealed = segment < self.sealed_before()
        try:
            with _segment_path(self.slot, segment).open("rb") as fh:
                fh.seek(self._file_offset)
                data = fh.read(READ_CHUNK)
        except FileNotFoundError:
            data = b""
        if data:
            self._buffer = self._buffer[self._start:] + data
            self._start = 0
            self._file_offset += len(data)
            return True
        if not sealed:
            return False  # the writer may still add to this segment
        later = [n for n in _segments(self.slot) if n > segment]
        if not later:
            return False
        if self._start < len(self._buffer):
            # A sealed segment ending without a newline: a write torn by the machine going down.
            self._buffer += b"\n"
            return True
        self._buffer, self._start = b"", 0
        self._next = (later[0], 0)
        self._file_offset = 0
        return True


class UsageRecorder:
    """Journals usage rows on the caller's thread; records them into the database from one thread.

    With `record_journal=False` (USAGE_RECORDER=process) the journal is recorded by a
    `JournalRecorder` in a process of its own; the thread here then only writes the rows a
    failing journal could not take.
    """

    def __init__(
        self,
        engine: Engine,
        root: Path,
        *,
        flush_interval_s: float = 0.5,
        batch_size: int = 500,
        segment_bytes: int = SEGMENT_BYTES,
        record_journal: bool = True,
    ) -> None:
        self.root = root
        self.record_journal = record_journal
        self._interval = flush_interval_s
        self._batch_size = batch_size
        self._segment_bytes = segment_bytes
        self._thread = BackgroundThread("usage-recorder", self._run)
        self._stop_deadline = float("inf")
        self._inserter = _Inserter(engine, root, lambda: self._thread.stopping, self._thread.sleep,
                                   lambda: self._stop_deadline)
        self._cond = threading.Condition()
        self._lock_fd: int | None = None
        self._fd = -1
        self._segment = 0
        self._segment_size = 0
        self._appended: Position = (0, 0)
        self._recorded: Position = (0, 0)
        self._cursor: _Cursor | None = None
        self._overflow: list[Record] = []  # rows the journal could not take (a full disk)
        self._journal_failing = False  # said so in the log once
        self._journal_ok = True  # the last journal write went through
        self._last_write = 0.0
        self._submitted = 0  # rows this process submitted, and how many of them are in the database
        self._recorded_rows = 0
        self._pending_since = 0.0  # about when the oldest row still waiting was submitted
        self.slot: Path | None = None
        self.written = 0

    # --- the caller's side ---------------------------------------------------

    def open(self) -> None:
        """Claim a free slot of the journal and start a new segment in it."""
        private_dir(self.root)
        for index in range(1024):
            slot = self.root / f"slot-{index}"
            fd = _try_lock(slot)
            if fd is not None:
                self._lock_fd, self.slot = fd, slot
                break
        else:
            raise JournalError(f"every slot of the usage journal in {self.root} is held by a live process")
        checkpoint = _read_checkpoint(self.slot)
        existing = _segments(self.slot)
        self._segment = max([checkpoint[0], *existing]) + 1
        self._fd = open_private(_segment_path(self.slot, self._segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._appended = (self._segment, 0)
        self._cursor = _Cursor(self.slot, lambda: self._segment)
        self._recorded = self._cursor.position

    def start(self) -> None:
        """Open the journal if needed and start the recorder thread (it first records what is left)."""
        if self._cursor is None:
            self.open()
        self._thread.start()

    def submit(self, record: Mapping[str, Any]) -> None:
        """Journal one usage row: one write() to the kernel; never waits on the database."""
        line = _encode(record)
        if self._submitted == self._recorded_rows:
            self._pending_since = time.monotonic()
        self._submitted += 1
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "short write to the usage journal")
        except OSError as exc:
            self._journal_failed(record, exc)
            return
        if not self._journal_ok:
            self._journal_ok = True
        self._segment_size += written
        self._appended = (self._segment, self._segment_size)
        if self._segment_size >= self._segment_bytes:
            self._rotate()
        self._thread.wake()

    def backlog_rows(self) -> int:
        """Rows this process submitted that are not in the database yet (journaled, or held after a journal failure).

        With USAGE_RECORDER=process the journal is the recorder's to move: only held rows count.
        """
        if not self.record_journal:
            return len(self._overflow)
        return max(0, self._submitted - self._recorded_rows)

    def lag_s(self) -> float:
        """About how long the oldest row still waiting for the database has waited (0: none waits)."""
        if not self.backlog_rows():
            return 0.0
        return max(0.0, time.monotonic() - self._pending_since)

    def trouble(self) -> str | None:
        """Why rows are not reaching their destination now, or None when the usage path is writing."""
        if not self._journal_ok:
            return "the usage journal cannot be written; rows are held in memory for the database"
        failing = self._inserter.failing_since
        if failing is not None and (self.record_journal or self._overflow):
            return f"usage rows have not reached the database for {time.monotonic() - failing:.1f} s (retrying)"
        return None

    def wait_idle(self, timeout: float) -> bool:
        """Block until every row submitted so far is in the database, or journaled for another process."""
        target = self._appended
        with self._cond:
            return self._cond.wait_for(
                lambda: (self._recorded >= target or not self.record_journal) and not self._overflow, timeout
            )

    def stop(self, timeout: float = 30.0) -> int:
        """Record what the database will take within `timeout`, stop; returns the rows left journaled."""
        self._stop_deadline = time.monotonic() + timeout
        self._thread.stop(timeout + 1.0)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        left = backlog(self.root) if self.record_journal else 0
        if self._overflow:
            log.error("%d usage rows could be neither journaled nor recorded: lost", len(self._overflow))
        if left:
            log.warning("%d usage rows are waiting in the journal (%s); they are recorded at the next start",
                        left, self.root)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        return left

    def _rotate(self) -> None:
        assert self.slot is not None
        fd = open_private(_segment_path(self.slot, self._segment + 1), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        old, self._fd = self._fd, fd
        self._segment += 1
        self._segment_size = 0
        self._appended = (self._segment, 0)
        os.close(old)

    def _journal_failed(self, record: Mapping[str, Any], exc: OSError) -> None:
        # Keep the row for the recorder to write directly: losing it is the one thing not to do.
        self._journal_ok = False
        if not self._journal_failing:
            self._journal_failing = True
            log.error("usage journal write failed (%s); rows go straight to the database meanwhile",
                      os.strerror(exc.errno or 0) or type(exc).__name__)
        with self._cond:
            self._overflow.append(dict(record))
        self._thread.wake()

    # --- the recorder thread -------------------------------------------------

    def _run(self) -> None:
        thread = self._thread
        if not self.record_journal:
            self._run_overflow_only()
            return
        self._adopt_orphans()
        assert self._cursor is not None
        while True:
            if thread.stopping and time.monotonic() >= self._stop_deadline:
                return
            self._record_overflow()
            rows, bad, position = self._cursor.read(self._batch_size)
            if not rows and not bad and position == self._cursor.position:
                if thread.stopping:
                    return
                thread.wait(self._interval)
                continue
            linger = self._interval - (time.monotonic() - self._last_write)
            if len(rows) < self._batch_size and linger > 0 and not thread.stopping:
                # Under steady traffic, at most one transaction per interval (a commit per row
                # cost more than the request); after a quiet interval, rows go out at once.
                thread.sleep(linger)
                more, more_bad, position = self._cursor.read(self._batch_size - len(rows))
                rows += more
                bad += more_bad
            if not self._record(self._cursor, rows, bad, position):
                return  # stopping while the database is away: the rest stays journaled

    def _run_overflow_only(self) -> None:
        thread = self._thread
        while not (thread.stopping and (not self._overflow or time.monotonic() >= self._stop_deadline)):
            self._record_overflow()
            thread.wait(self._interval)

    def _adopt_orphans(self) -> None:
        """Record what slots no live process holds left behind (a crashed worker's), then let them go."""
        for slot in sorted(self.root.glob("slot-*")):
            if slot == self.slot or not _segments(slot):
                continue
            fd = _try_lock(slot)
            if fd is None:
                continue
            try:
                cursor = _Cursor(slot, lambda: 1 << 62)
                while True:
                    rows, bad, position = cursor.read(self._batch_size)
                    if not rows and not bad and position == cursor.position:
                        break
                    if not self._record(cursor, rows, bad, position, own=False):
                        return
            finally:
                os.close(fd)

    def _record(
        self, cursor: _Cursor, rows: list[Record], bad: list[bytes], position: Position, own: bool = True,
    ) -> bool:
        """Insert rows with retries; checkpoint; False when stopping forced us to leave them journaled."""
        if not self._inserter.record(rows, bad):
            return False
        cursor.advance(position)
        self._last_write = time.monotonic()
        with self._cond:
            self.written += len(rows)
            if own:
                self._recorded = position
                self._recorded_rows += len(rows)
                self._pending_since = self._last_write  # the rows left were submitted after those written
            self._cond.notify_all()
        return True

    def _record_overflow(self) -> None:
        if not self._overflow:
            return
        with self._cond:
            rows, self._overflow = self._overflow, []
        if not self._inserter.write_with_retry(rows):
            with self._cond:
                self._overflow[:0] = rows
            return
        with self._cond:
            self.written += len(rows)
            self._recorded_rows += len(rows)
            self._cond.notify_all()

class JournalRecorder:
    """Records every slot of a journal from a process of its own (USAGE_RECORDER=process).

    The proxies only journal; this process does the database writing, so its batches (and
    SQLite's rollup triggers) hold neither a proxy's GIL nor its core. A live proxy's slot is
    read up to its newest segment's last complete line; a slot no process holds is drained
    to its end. One recorder per journal directory (`recorder.lock`).
    """

    def __init__(self, engine: Engine, root: Path, *, flush_interval_s: float = 0.5, batch_size: int = 500) -> None:
        self.root = root
        self._interval = flush_interval_s
        self._batch_size = batch_size
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        self._inserter = _Inserter(engine, root, self._stopping.is_set, self._stopping.wait,
                                   lambda: self._stop_deadline)
        self._cursors: dict[Path, _Cursor] = {}
        self._lock_fd: int | None = None
        self.written = 0

    def claim(self) -> None:
        """Become the journal's one recorder (JournalError when another one runs)."""
        private_dir(self.root)
        fd = open_private(self.root / "recorder.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise JournalError(f"another usage recorder already records {self.root}") from None
            raise
        self._lock_fd = fd

    def stop(self, timeout: float) -> None:
        """Ask `run` to finish: it records until no proxy holds a slot and all is drained, or `timeout`."""
        self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()

    def run(self) -> int:
        """Record until stopped; returns the rows left journaled."""
        if self._lock_fd is None:
            self.claim()
        try:
            while True:
                started = time.monotonic()
                recorded, live, complete = self.record_pass()
                if self._stopping.is_set():
                    if (not live and complete) or time.monotonic() >= self._stop_deadline:
                        break
                    if not recorded:
                        time.sleep(min(0.05, self._interval))
                    continue
                if recorded < self._batch_size:
                    # As in the proxy's own recorder: one transaction per interval under load.
                    self._stopping.wait(max(0.0, self._interval - (time.monotonic() - started)))
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        left = backlog(self.root)
        if left:
            log.warning("%d usage rows are waiting in the journal (%s); they are recorded at the next start",
                        left, self.root)
        return left

    def record_pass(self) -> tuple[int, int, bool]:
        """One batch from each slot: (rows recorded, slots a live proxy holds, whether all were read)."""
        recorded = live = 0
        complete = True
        for slot in sorted(self.root.glob("slot-*")):
            fd = _try_lock(slot)
            try:
                cursor = self._cursors.get(slot)
                if cursor is None:
                    cursor = self._cursors[slot] = _Cursor(slot, lambda: 0)
                if fd is None:
                    live += 1
                    # The writer opens segment N+1 only after its last write to N: below the
                    # newest segment, every segment is complete.
                    cursor.sealed_before = functools.partial(_newest_segment, slot)
                else:
                    cursor.sealed_before = lambda: 1 << 62
                rows, bad, position = cursor.read(self._batch_size)
                if not rows and not bad and position == cursor.position:
                    continue
                complete = complete and len(rows) < self._batch_size
                if not self._inserter.record(rows, bad):
                    del self._cursors[slot]  # read again from the checkpoint next time
                    return recorded, live, False
                cursor.advance(position)
                recorded += len(rows)
                self.written += len(rows)
            finally:
                if fd is not None:
                    os.close(fd)
        return recorded, live, complete


class _Inserter:
    """Writes journaled rows into the database: outages retried, rows it refuses set aside."""

    def __init__(self, engine: Engine, root: Path, stopping: Callable[[], bool], sleep: Callable[[float], object],
                 deadline: Callable[[], float]) -> None:
        self._engine = engine
        self._root = root
        self._stopping = stopping
        self._sleep = sleep  # cut short by a stop request
        self._deadline = deadline
        self.failing_since: float | None = None  # monotonic time of the first failure of the current outage

    def record(self, rows: list[Record], bad: list[bytes]) -> bool:
        """Insert rows (retrying outages) and set unreadable lines aside; False when stopping cut it short."""
        if bad:
            log.error("%d unreadable lines in the usage journal set aside in refused.jsonl", len(bad))
            self.refuse_lines(bad, "unreadable journal line")
        return not rows or self.write_with_retry(rows)

    def write_with_retry(self, rows: list[Record]) -> bool:
        delay = 0.2
        attempts = 0
        while True:
            attempts += 1
            try:
                self._write(rows)
                self.failing_since = None
                return True
            except Exception as exc:  # noqa: BLE001 - outages are retried, refused rows set aside
                if is_outage(exc) and self.failing_since is None:
                    self.failing_since = time.monotonic()
                if not is_outage(exc):
                    # The database refused the data itself: write the rows one by one, so a single
                    # bad row cannot hold back everyone else's.
                    self._write_each(rows)
                    self.failing_since = None  # it answered: the database is there
                    return True
                if attempts == 1 or attempts % 20 == 0:
                    log.error("usage write of %d rows failed (attempt %d): %s; retrying, rows stay journaled",
                              len(rows), attempts, type(exc).__name__)
            if self._stopping() and time.monotonic() + delay >= self._deadline():
                return False
            if self._stopping():
                time.sleep(delay)  # stopping, with time left: keep trying within the deadline
            else:
                self._sleep(delay)
            delay = min(delay * 2, 5.0)

    def _write(self, rows: list[Record]) -> None:
        last_used: dict[int, datetime] = {}
        for row in rows:
            key_id = row.get("key_id")
            if key_id is not None:
                created = row["created_at"]
                if key_id not in last_used or created > last_used[key_id]:
                    last_used[key_id] = created
        with Session(self._engine) as session, session.begin():
            session.execute(_insert_ignoring_duplicates(self._engine), rows)
            for key_id, when in last_used.items():
                session.execute(
                    update(ApiKey).where(ApiKey.id == key_id, _older_than(when)).values(last_used_at=when)
                )

    def _write_each(self, rows: list[Record]) -> None:
        for row in rows:
            try:
                self._write([row])
            except Exception as exc:  # noqa: BLE001
                log.error("usage row %s refused by the database: %s", row.get("request_id"), type(exc).__name__)
                self.refuse_lines([_encode(row).rstrip(b"\n")], "refused by the database")

    def refuse_lines(self, lines: list[bytes], reason: str) -> None:
        # A dead letter for an operator: rows the database will never take stop blocking the journal.
        fd = open_private(self._root / "refused.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            for line in lines:
                os.write(fd, line + b"\n")
        finally:
            os.close(fd)
        log.error("%d usage rows %s: saved to %s", len(lines), reason, self._root / "refused.jsonl")



def _older_than(when: datetime) -> Any:
    # A replayed (older) row must not move last_used_at backwards.
    return (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < when)


def _insert_ignoring_duplicates(engine: Engine) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(UsageRecord).on_conflict_do_nothing(index_elements=["request_id"])
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(UsageRecord).on_conflict_do_nothing(index_elements=["request_id"])
    raise JournalError(f"unsupported database dialect {engine.dialect.name!r}")


def journal_rows(root: Path) -> Iterator[Record]:
    """Every row still journaled under `root`, oldest first (for tools and tests)."""
    for slot in sorted(root.glob("slot-*")):
        cursor = _Cursor(slot, lambda: 1 << 62)
        last = cursor.position
        while True:
            rows, _bad, position = cursor.read(1000)
            if not rows and position == last:
                break
            last = position
            yield from rows
