"""Engine creation and the few DB helpers both apps need."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, select, update
from sqlalchemy.orm import Session

from shared.models import ConfigVersion, utcnow

SQLITE_BUSY_TIMEOUT_MS = 10_000


def engine_options(database_url: str) -> dict[str, Any]:
    """Keyword arguments for `create_engine` suited to the backend."""
    if database_url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5}


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


def make_engine(database_url: str) -> Engine:
    """Create an engine with the project's connection settings."""
    engine = create_engine(database_url, **engine_options(database_url))
    configure_sqlite(engine)
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
