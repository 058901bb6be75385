"""The migration chain builds an empty database to head, matches shared.models exactly, and reverses.

Runs on SQLite, and on PostgreSQL when TEST_POSTGRES_URL is set (`.ci/run`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from shared.db import make_engine
from shared.migrate import alembic_config, upgrade_database
from shared.models import Base
from tests.conftest import PG_ADMIN_URL, throwaway_postgres_database

pytestmark = pytest.mark.db


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all: a new SQLite file, or a new PostgreSQL database."""
    if not PG_ADMIN_URL:
        yield f"sqlite:///{tmp_path / 'empty' / 'nexusai.db'}"
        return
    with throwaway_postgres_database("nx_migr_") as url:
        yield url


def _current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _pending_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_chain_is_linear_with_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))

    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1


def test_empty_database_upgrades_to_head_with_no_pending_autogenerate_diff(empty_database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_current_head()

    upgrade_database(empty_database_url)

    assert _current_revision(empty_database_url) == head
    assert _tables(empty_database_url) == set(Base.metadata.tables) | {"alembic_version"}
    assert _pending_diff(empty_database_url) == []


def test_upgrade_is_idempotent_and_the_chain_downgrades_to_empty(empty_database_url: str) -> None:
    upgrade_database(empty_database_url)
    upgrade_database(empty_database_url)  # run.py does this on every start

    command.downgrade(alembic_config(empty_database_url), "base")
    assert _tables(empty_database_url) <= {"alembic_version"}

    upgrade_database(empty_database_url)
    assert _pending_diff(empty_database_url) == []
