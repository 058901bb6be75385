"""Logging set-up shared by both processes: rotating file plus stderr."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys

from shared.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


class _ThreadQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler for a same-process listener: the caller only merges msg % args."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Merge the message now (args may change later); format and copy only records with tracebacks."""
        if record.exc_info or record.stack_info:
            return super().prepare(record)
        record.msg = record.getMessage()
        record.args = None
        return record


def setup_logging(settings: Settings, process: str) -> None:
    """Send records to `LOG_DIR/<process>.log` (rotating) and stderr, once per process.

    The proxy logs through a queue drained by a thread, so an access line never
    makes its event loop wait on a disk write.
    """
    root = logging.getLogger()
    if getattr(root, "_nexusai_configured", None) == process:
        return
    for handler in list(root.handlers):
        if getattr(handler, "_nexusai", False):
            root.removeHandler(handler)
            handler.close()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(LOG_FORMAT)
    file_handler = logging.handlers.RotatingFileHandler(
        settings.log_dir / f"{process}.log", maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
    )
    stream_handler = logging.StreamHandler(sys.stderr)
    for handler in (file_handler, stream_handler):
        handler.setFormatter(formatter)
    if process == "proxy":
        # One access line per request on the event loop: skip the caller lookup and the
        # thread/process fields LOG_FORMAT never shows (logging's documented optimisations).
        logging._srcfile = None  # type: ignore[attr-defined]
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        log_queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(log_queue, file_handler, stream_handler)
        listener.start()
        atexit.register(listener.stop)
        front: list[logging.Handler] = [_ThreadQueueHandler(log_queue)]
    else:
        front = [file_handler, stream_handler]
    for handler in front:
        handler._nexusai = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    root._nexusai_configured = process  # type: ignore[attr-defined]
