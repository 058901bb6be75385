"""Engine creation and the few DB helpers both apps need."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, select, update
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session

from shared.file_modes import prepare_sqlite_file
from shared.models import ConfigVersion, utcnow

log = logging.getLogger("nexusai.db")

SQLITE_BUSY_TIMEOUT_MS = 10_000
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_STATEMENT_TIMEOUT_S = 10.0
# The checkout ping: a pooled connection to a hung server is given up on this quickly.
PING_TIMEOUT_S = 2.0
# The server cancels a statement at its statement_timeout; the client waits this much longer.
CLIENT_GRACE_S = 1.0


def engine_options(
    database_url: str,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
) -> dict[str, Any]:
    """Keyword arguments for `create_engine` suited to the backend."""
    if database_url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}}
    return {
        # Pings are ours (see configure_postgres): SQLAlchemy's own would wait forever on a hung server.
        "pool_pre_ping": False,
        "pool_size": 5,
        "max_overflow": 5,
        "pool_timeout": connect_timeout_s,
        "connect_args": {
            "connect_timeout": max(1, math.ceil(connect_timeout_s)),
            # 0: no limit (migrations).
            "options": f"-c statement_timeout={max(0, int(statement_timeout_s * 1000))}",
        },
    }


class StatementWatchdog:
    """Shuts the socket under a PostgreSQL call that outlives its deadline.

    The server's statement_timeout cancels slow statements, but a server that is
    stopped, frozen or cut off answers nothing, and the driver would wait forever.
    Shutting the socket makes the blocked call fail at once; the pool then drops
    that connection.
    """

    def __init__(self) -> None:
        self._deadlines: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, dbapi_conn: Any, seconds: float) -> None:
        """Give the call now starting on `dbapi_conn` until `seconds` from now."""
        with self._lock:
            self._deadlines[id(dbapi_conn)] = (time.monotonic() + seconds, dbapi_conn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
                self._thread.start()

    def unwatch(self, dbapi_conn: Any) -> None:
        """The call on `dbapi_conn` has returned."""
        with self._lock:
            self._deadlines.pop(id(dbapi_conn), None)

    def _run(self) -> None:
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            with self._lock:
                expired = [conn for deadline, conn in self._deadlines.values() if deadline <= now]
                for conn in expired:
                    self._deadlines.pop(id(conn), None)
            for conn in expired:
                self._cut(conn)

    @staticmethod
    def _cut(conn: Any) -> None:
        try:
            fd = os.dup(conn.pgconn.socket)
        except Exception:  # noqa: BLE001 - the connection is already gone
            return
        try:
            with socket.socket(fileno=fd) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        log.warning("database call exceeded its deadline: connection cut (is the database server hung?)")


_watchdog = StatementWatchdog()


def configure_postgres(engine: Engine, statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S) -> None:
    """Bound every PostgreSQL call in time, on the client side too (see StatementWatchdog)."""
    if engine.dialect.name != "postgresql":
        return

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        _watchdog.watch(dbapi_conn, PING_TIMEOUT_S)
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()
        except Exception as exc:
            # The pool retries with a fresh connection (whose connect is bounded by connect_timeout).
            raise DisconnectionError(f"ping failed: {type(exc).__name__}") from exc
        finally:
            _watchdog.unwatch(dbapi_conn)

    if statement_timeout_s <= 0:
        return  # no limit on statements (migrations); connects and pings stay bounded
    limit = statement_timeout_s + CLIENT_GRACE_S

    @event.listens_for(engine, "before_cursor_execute")
    def _before(_conn: Any, cursor: Any, *_args: Any) -> None:
        _watchdog.watch(cursor.connection, limit)

    @event.listens_for(engine, "after_cursor_execute")
    def _after(_conn: Any, cursor: Any, *_args: Any) -> None:
        _watchdog.unwatch(cursor.connection)

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        cursor = getattr(context, "cursor", None)
        if cursor is not None:
            _watchdog.unwatch(cursor.connection)


def configure_sqlite(engine: Engine) -> None:
    """Turn on WAL, a busy timeout and foreign keys for every SQLite connection."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def configure_engine(engine: Engine, statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S) -> None:
    """The per-backend connection set-up of every engine we make."""
    configure_sqlite(engine)
    configure_postgres(engine, statement_timeout_s)


def make_engine(
    database_url: str,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
) -> Engine:
    """Create an engine with the project's connection settings (a new SQLite file is private)."""
    prepare_sqlite_file(database_url)
    engine = create_engine(database_url, **engine_options(database_url, connect_timeout_s, statement_timeout_s))
    configure_engine(engine, statement_timeout_s)
    return engine


def bump_config_version(session: Session) -> None:
    """Increment the config version inside the caller's transaction."""
    result = session.execute(
        update(ConfigVersion)
        .where(ConfigVersion.id == 1)
        .values(version=ConfigVersion.version + 1, updated_at=utcnow())
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.add(ConfigVersion(id=1, version=1, updated_at=utcnow()))


def read_config_version(session: Session) -> int:
    """The current config version (0 when nothing was ever changed)."""
    return session.scalar(select(ConfigVersion.version).where(ConfigVersion.id == 1)) or 0
