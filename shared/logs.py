"""Logging set-up shared by both processes: rotating file plus stderr."""

from __future__ import annotations

import atexit
import collections
import logging
import logging.handlers
import sys
import time
from datetime import datetime, timezone
from typing import Any

import orjson

from shared.background import BackgroundThread
from shared.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


# How long an INFO line may wait for the writer thread; WARNING and above wake it at once.
BATCH_INTERVAL_S = 0.1
BATCH_WAKE_AT = 1000  # lines buffered
# Libraries whose INFO lines repeat what ours say (or say nothing an operator needs): shown from
# WARNING up, all of them at LOG_LEVEL=DEBUG.
LIBRARY_LOGGERS = ("alembic", "gunicorn.error")


class BatchingHandler(logging.Handler):
    """Formats records on the caller's thread; a writer thread appends them to the streams in batches.

    A queue drained by a listener woke that thread for every line, and the listener then
    formatted each record holding the GIL: at one request at a time the wake-up cost more
    than the request, and a batch of formatting stalled the event loop. Here the caller
    formats (a few microseconds) and appends to a deque; every BATCH_INTERVAL_S (at once
    for a warning) the thread writes what has gathered with one call per stream, which
    holds the GIL for almost nothing.
    """

    def __init__(self, *targets: logging.StreamHandler[Any]) -> None:
        super().__init__()
        self._targets = targets
        self._lines: collections.deque[str] = collections.deque()
        self._closed = False
        self._thread = BackgroundThread("log-writer", self._run)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """Format now (args and exceptions are alive now) and buffer the line; no lock needed."""
        if self.filters and not self.filter(record):
            return False
        try:
            line = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
            return False
        self._lines.append(line)
        if record.levelno >= logging.WARNING or len(self._lines) >= BATCH_WAKE_AT:
            self._thread.wake()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer one record (see handle)."""
        self.handle(record)

    def append(self, line: str) -> None:
        """Buffer one line already in LOG_FORMAT (with its newline)."""
        self._lines.append(line)

    def _run(self) -> None:
        # Normal priority, unlike the usage writer: its batches are a join and two writes, and at
        # idle priority a proxy that never rests would hold every line in memory.
        while not self._thread.stopping:
            self._thread.wait(BATCH_INTERVAL_S)
            self._write()
        self._write()

    def _write(self) -> None:
        lines = self._lines
        if not lines:
            return
        taken = [lines.popleft() for _ in range(len(lines))]
        text = "".join(taken)
        for target in self._targets:
            target.acquire()
            try:
                if isinstance(target, logging.handlers.RotatingFileHandler) and target.maxBytes > 0:
                    _write_rotating(target, taken)
                else:
                    target.stream.write(text)
                target.stream.flush()
            except Exception as exc:  # noqa: BLE001 - a full disk must not kill the writer thread
                print(f"nexusai: {len(taken)} log lines lost: {exc!r}", file=sys.__stderr__)
            finally:
                target.release()

    def close(self) -> None:
        """Write what is buffered, stop the thread, close the streams."""
        global _batching
        if _batching is self:
            _batching = None
        if not self._closed:
            self._closed = True
            self._thread.stop(5.0)
            for target in self._targets:
                target.close()
        super().close()


class _Clock:
    """LOG_FORMAT's asctime, with the strftime done once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def asctime(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._text},{int((now - second) * 1000):03d}"


class JsonFormatter(logging.Formatter):
    """LOG_FORMAT=json: one object per line (`ts` in UTC, `level`, `logger`, `message`, `exception`)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line (without its newline)."""
        body: dict[str, Any] = {
            "ts": _utc_iso(record.created), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            body["exception"] = record.exc_text
        return orjson.dumps(body).decode()


def _utc_iso(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_file_handler: logging.Handler | None = None  # LOG_DIR/<process>.log, once setup_logging made it
_batching: BatchingHandler | None = None  # the proxy process's, once setup_logging installed it
_json_lines = False  # LOG_FORMAT=json
_clock = _Clock()


def log_info_line(logger: logging.Logger, fmt: str, *args: object) -> None:
    """logger.info(fmt, *args); straight into the proxy's batch when it is the only place the line goes.

    The access line is written for every request: a LogRecord, a Formatter pass and
    strftime were ~10% of the event loop's time per request. The line is the same.
    """
    if _batching is not None and logger.isEnabledFor(logging.INFO) and _only_root_handles(logger):
        if _json_lines:
            _batching.append(orjson.dumps({"ts": _utc_iso(time.time()), "level": "INFO", "logger": logger.name,
                                           "message": fmt % args}).decode() + "\n")
        else:
            _batching.append(f"{_clock.asctime()} INFO [{logger.name}] {fmt % args}\n")
    else:
        logger.info(fmt, *args)


def _only_root_handles(logger: logging.Logger) -> bool:
    """Whether a record of `logger` reaches the root's batching handler and nothing else."""
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.handlers or not node.propagate:
            return False
        node = node.parent
    return _batching is not None and logging.root.handlers == [_batching] and not _batching.filters


def _write_rotating(target: logging.handlers.RotatingFileHandler, lines: list[str]) -> None:
    """Append lines, rolling the file over before the one that would take it past maxBytes."""
    if target.stream is None:
        target.doRollover()
    stream = target.stream
    assert stream is not None  # doRollover opened it
    size = stream.tell()
    pending: list[str] = []
    for line in lines:
        if size and size + len(line) >= target.maxBytes:
            stream.write("".join(pending))
            pending = []
            target.doRollover()
            stream = target.stream
            assert stream is not None
            size = 0
        pending.append(line)
        size += len(line)
    stream.write("".join(pending))


def library_level(settings: Settings) -> int:
    """The level of LIBRARY_LOGGERS: WARNING (or LOG_LEVEL when higher), DEBUG when LOG_LEVEL is."""
    level = logging.getLevelName(settings.log_level)
    return logging.DEBUG if level == logging.DEBUG else max(logging.WARNING, level)


def log_to_file_only(logger: logging.Logger, fmt: str, *args: object) -> None:
    """An INFO line for the log file and not stderr: for what the caller already printed on stdout."""
    handler = _file_handler
    if handler is None or not logger.isEnabledFor(logging.INFO):
        return
    handler.handle(logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, fmt, args, None))


def setup_logging(settings: Settings, process: str) -> None:
    """Send records to `LOG_DIR/<process>.log` (rotating) and stderr, once per process.

    The proxy logs through a BatchingHandler, so an access line never makes its
    event loop wait on a disk write (nor wake a thread of its own).
    """
    root = logging.getLogger()
    if getattr(root, "_nexusai_configured", None) == process:
        return
    for handler in list(root.handlers):
        if getattr(handler, "_nexusai", False):
            root.removeHandler(handler)
            handler.close()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    global _json_lines
    _json_lines = settings.log_format == "json"
    formatter = JsonFormatter() if _json_lines else logging.Formatter(LOG_FORMAT)
    file_handler = logging.handlers.RotatingFileHandler(
        settings.log_dir / f"{process}.log", maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
    )
    stream_handler = logging.StreamHandler(sys.stderr)
    for handler in (file_handler, stream_handler):
        handler.setFormatter(formatter)
    if process == "proxy" or process.startswith("proxy-"):  # proxy-<i>: a worker of PROXY_WORKERS
        # One access line per request on the event loop: skip the caller lookup and the
        # thread/process fields LOG_FORMAT never shows (logging's documented optimisations).
        logging._srcfile = None
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        global _batching
        batching = _batching = BatchingHandler(file_handler, stream_handler)
        batching.setFormatter(formatter)
        atexit.register(batching.close)
        front: list[logging.Handler] = [batching]
    else:
        front = [file_handler, stream_handler]
    for handler in front:
        handler._nexusai = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level(settings))
    global _file_handler
    _file_handler = file_handler
    root._nexusai_configured = process  # type: ignore[attr-defined]
