"""Fixtures shared by every test: a fresh migrated database and Settings on tmp_path.

Set TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:55432/postgres) to
run the database-facing tests against PostgreSQL: each test then gets its own
throwaway database created from that server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from shared.migrate import upgrade_database
from shared.settings import Settings, _database_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.redis_server import RedisServer

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "")


@contextmanager
def throwaway_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the TEST_POSTGRES_URL server, dropped afterwards; its URL."""
    server = _database_url(PG_ADMIN_URL, Path("."))
    name = prefix + uuid.uuid4().hex[:12]
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: SQLite in tmp_path, or a new PostgreSQL database."""
    if not PG_ADMIN_URL:
        url = f"sqlite:///{tmp_path / 'nexusai.db'}"
        upgrade_database(url)
        yield url
        return
    with throwaway_postgres_database("nx_test_") as url:
        upgrade_database(url)
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings pointing every directory and the database into tmp_path."""
    for sub in ("data", "logs", "messages"):
        (tmp_path / sub).mkdir(exist_ok=True)
    return Settings(
        database_url=database_url,
        admin_host="127.0.0.1",
        admin_port=0,
        proxy_host="127.0.0.1",
        proxy_port=0,
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
        messages_dir=tmp_path / "messages",
        config_poll_interval_s=0.2,
        usage_flush_interval_s=0.05,
    )


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """A started fake OpenAI-compatible upstream on loopback."""
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One throwaway redis-server for the session (tests keep apart by key prefix)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A Redis key prefix of this test's own."""
    return f"nxt{uuid.uuid4().hex[:10]}:"
