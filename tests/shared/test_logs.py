"""The proxy's batching log handler: formatted once, tracebacks kept, rotation, nothing lost at close."""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

from shared.logs import LOG_FORMAT, BatchingHandler


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def _handler(*targets: logging.StreamHandler) -> BatchingHandler:  # type: ignore[type-arg]
    formatter = logging.Formatter(LOG_FORMAT)
    for target in targets:
        target.setFormatter(formatter)
    handler = BatchingHandler(*targets)
    handler.setFormatter(formatter)
    return handler


@contextlib.contextmanager
def _root_logging_restored() -> Iterator[None]:
    """Let a test install NexusAI's logging on the root logger; put the root back as it was after."""
    from shared import logs

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, getattr(root, "_nexusai_configured", None))
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_nexusai", False):
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        root._nexusai_configured = saved[2]  # type: ignore[attr-defined]
        logs._json_lines = False


def test_lines_reach_every_stream_formatted_once_with_their_traceback(tmp_path: Path) -> None:
    path = tmp_path / "proxy.log"
    stream = io.StringIO()
    handler = _handler(logging.handlers.RotatingFileHandler(path, maxBytes=10**6, encoding="utf-8"),
                       logging.StreamHandler(stream))
    logger = _logger("nexusai.test.batching", handler)
    try:
        args = ["mutable"]
        logger.info("request %s", args)
        args.append("changed later")  # the line keeps what the arguments were when logged
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("handler failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = path.read_text(encoding="utf-8")
    assert text == stream.getvalue()
    lines = text.splitlines()
    assert lines[0].endswith("INFO [nexusai.test.batching] request ['mutable']")
    assert lines[1].endswith("ERROR [nexusai.test.batching] handler failed")
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "ValueError: boom"
    assert text.count("[nexusai.test.batching]") == 2  # not formatted twice


def test_the_file_rotates_and_no_line_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "proxy.log"
    handler = _handler(logging.handlers.RotatingFileHandler(path, maxBytes=4000, backupCount=50, encoding="utf-8"))
    logger = _logger("nexusai.test.rotation", handler)
    try:
        for i in range(400):
            logger.info("line %04d", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(tmp_path.glob("proxy.log*"))
    assert len(files) > 2
    seen = sorted(line.rsplit(" ", 1)[1] for f in files for line in f.read_text(encoding="utf-8").splitlines())
    assert seen == [f"{i:04d}" for i in range(400)]


def test_the_fast_access_line_is_the_line_logging_would_write(tmp_path: Path) -> None:
    """log_info_line bypasses LogRecord and Formatter in the proxy process: same text, same file."""
    from shared import logs
    from shared.settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", log_dir=tmp_path / "logs",
                        data_dir=tmp_path / "data", messages_dir=tmp_path / "messages")
    root = logging.getLogger()
    with _root_logging_restored():
        logs.setup_logging(settings, "proxy")
        assert logs._batching is not None
        # As in the proxy process: pytest's own capture handlers on the root would (rightly) turn
        # the shortcut off.
        root.handlers[:] = [logs._batching]
        access = logging.getLogger("nexusai.test.access")
        made: list[str] = []
        factory = logging.getLogRecordFactory()

        def counting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
            made.append(str(args[0]))
            return factory(*args, **kwargs)

        logging.setLogRecordFactory(counting_factory)
        try:
            logs.log_info_line(access, "%s status=%d latency_ms=%.1f", "req_1", 200, 1.25)
            assert made == []  # the fast path: no LogRecord at all
            access.info("%s status=%d latency_ms=%.1f", "req_1", 200, 1.25)
            assert made == ["nexusai.test.access"]
        finally:
            logging.setLogRecordFactory(factory)
        # A handler on a logger in between must still see the line: no shortcut then.
        seen: list[logging.LogRecord] = []
        catcher = logging.Handler()
        catcher.emit = seen.append  # type: ignore[method-assign]
        parent = logging.getLogger("nexusai.test")
        parent.addHandler(catcher)
        try:
            logs.log_info_line(access, "%s status=%d", "req_2", 200)
        finally:
            parent.removeHandler(catcher)
        assert [r.getMessage() for r in seen] == ["req_2 status=200"]
    fast, slow, third = (tmp_path / "logs" / "proxy.log").read_text(encoding="utf-8").splitlines()
    assert third.endswith("INFO [nexusai.test.access] req_2 status=200")
    expected = "INFO [nexusai.test.access] req_1 status=200 latency_ms=1.2"
    assert fast.split(" ", 2)[2] == slow.split(" ", 2)[2] == expected
    assert len(fast.split(" ", 2)[1]) == len(slow.split(" ", 2)[1]) == len("12:00:00,000")
    assert logs._batching is None  # closed with its handler: later lines go through logging


def test_json_lines_from_both_paths(tmp_path: Path) -> None:
    """LOG_FORMAT=json: every line an object, the proxy's fast access line included, tracebacks kept."""
    import json

    from shared import logs
    from shared.settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", log_dir=tmp_path / "logs",
                        data_dir=tmp_path / "data", messages_dir=tmp_path / "messages", log_format="json")
    root = logging.getLogger()
    with _root_logging_restored():
        logs.setup_logging(settings, "proxy")
        assert logs._batching is not None
        root.handlers[:] = [logs._batching]
        logs.log_info_line(logging.getLogger("nexusai.test.access"), "%s status=%d", "req_1", 200)
        try:
            raise ValueError("broken \"quote\"\nline")
        except ValueError:
            logging.getLogger("nexusai.test").exception("it failed: %s", "why")
        logs._batching.close()
        lines = (tmp_path / "logs" / "proxy.log").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert [(r["level"], r["logger"], r["message"]) for r in records] == [
            ("INFO", "nexusai.test.access", "req_1 status=200"), ("ERROR", "nexusai.test", "it failed: why")]
        assert 'ValueError: broken "quote"\nline' in records[1]["exception"]
        assert all(r["ts"].endswith("Z") and "T" in r["ts"] for r in records)
