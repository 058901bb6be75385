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
from shared.secret_box import SecretBox
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


def _execute(url: str, *statements: str) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                result = conn.exec_driver_sql(statement)
                rows = [tuple(r) for r in result] if result.returns_rows else []
            return rows
    finally:
        engine.dispose()


def test_0010_keeps_every_provider_and_model_and_ids_are_never_reused(empty_database_url: str) -> None:
    cfg = alembic_config(empty_database_url)
    if empty_database_url.startswith("sqlite:///"):
        Path(empty_database_url[len("sqlite:///"):]).parent.mkdir(parents=True)
    command.upgrade(cfg, "0009")
    provider = ("INSERT INTO provider (name, server_url, server_key, description, enabled, timeout_s, kind,"
                " connect_timeout_s, priority, weight, created_at, updated_at) VALUES"
                " ('{}', 'https://p.test', 'k', '', true, 60, 'openai', 5, 0, 1, '2026-12-01', '2026-12-01')")
    model = ("INSERT INTO provider_model (provider_id, model_name, description, enabled, created_at, updated_at)"
             " SELECT id, '{}', '', true, '2026-12-01', '2026-12-01' FROM provider WHERE name = '{}'")
    _execute(empty_database_url, provider.format("a"), provider.format("b"), model.format("m1", "a"),
             model.format("m2", "b"))
    ids = "SELECT name, id FROM provider ORDER BY id"
    models = "SELECT m.model_name, p.name FROM provider_model m JOIN provider p ON p.id = m.provider_id ORDER BY m.id"
    (a, first), (b, second) = _execute(empty_database_url, ids)
    first_models = _execute(empty_database_url, "SELECT max(id) FROM provider_model")[0][0]

    assert upgrade_database(empty_database_url)[0].startswith("schema upgraded from revision 0009 to ")

    assert _execute(empty_database_url, models) == [("m1", "a"), ("m2", "b")]  # the rebuild kept them
    assert _pending_diff(empty_database_url) == []
    # Deleting the newest provider cascades to its model and leaves both ids used up.
    _execute(empty_database_url, f"DELETE FROM provider WHERE id = {second}")
    assert _execute(empty_database_url, models) == [("m1", "a")]
    _execute(empty_database_url, provider.format("c"), model.format("m3", "a"))
    (third,) = _execute(empty_database_url, "SELECT id FROM provider WHERE name = 'c'")[0]
    (m3,) = _execute(empty_database_url, "SELECT id FROM provider_model WHERE model_name = 'm3'")[0]
    assert isinstance(third, int) and isinstance(second, int) and third > second
    assert isinstance(m3, int) and isinstance(first_models, int) and m3 > first_models

    command.downgrade(cfg, "0009")  # and back, models kept again
    assert _execute(empty_database_url, models) == [("m1", "a"), ("m3", "a")]


def test_upgrade_says_what_it_did_in_one_line_per_step_that_applies(empty_database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_current_head()

    assert upgrade_database(empty_database_url) == [f"schema created (revision {head})"]
    assert upgrade_database(empty_database_url) == [f"schema up to date (revision {head})"]

    command.downgrade(alembic_config(empty_database_url), "0003")
    lines = upgrade_database(empty_database_url)
    assert lines[0] == f"schema upgraded from revision 0003 to {head}"
    steps = [line.split(":")[0].strip() for line in lines[1:]]
    sqlite_only = {"0004", "0010"}  # rebuilds that give SQLite PostgreSQL's never-reused ids
    expected = [f"{n:04d}" for n in range(4, int(head) + 1)]
    if not empty_database_url.startswith("sqlite"):
        expected = [s for s in expected if s not in sqlite_only]
    assert steps == expected
    assert "  0005: provider kind, apis and connect timeout; usage api, cached and reasoning tokens" in lines


def test_0012_seals_existing_secrets_with_secret_key_and_downgrade_opens_them(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = alembic_config(empty_database_url)
    if empty_database_url.startswith("sqlite:///"):
        Path(empty_database_url[len("sqlite:///"):]).parent.mkdir(parents=True)
    command.upgrade(cfg, "0011")
    _execute(
        empty_database_url,
        "INSERT INTO provider (name, server_url, server_key, description, enabled, http_proxy, timeout_s, kind,"
        " connect_timeout_s, priority, weight, created_at, updated_at) VALUES ('a', 'https://p.test',"
        " 'sk-clear-secret-0123456789', '', true, 'http://u:proxy-pw-77@proxy.test:3128', 60, 'openai', 5, 0, 1,"
        " '2026-12-01', '2026-12-01')",
    )
    monkeypatch.setenv("SECRET_KEY", "migration-secret")

    upgrade_database(empty_database_url)

    ((key, hint, proxy, display),) = _execute(
        empty_database_url, "SELECT server_key, server_key_hint, http_proxy, http_proxy_display FROM provider"
    )
    assert key.startswith("enc:v1:") and "sk-clear" not in key
    assert proxy.startswith("enc:v1:") and "proxy-pw-77" not in proxy
    assert hint == "…6789" and display == "http://u:***@proxy.test:3128"
    box = SecretBox("migration-secret")
    assert box.open(key) == "sk-clear-secret-0123456789"
    assert box.open(proxy) == "http://u:proxy-pw-77@proxy.test:3128"
    assert _pending_diff(empty_database_url) == []

    command.downgrade(cfg, "0011")
    assert _execute(empty_database_url, "SELECT server_key, http_proxy FROM provider") == [
        ("sk-clear-secret-0123456789", "http://u:proxy-pw-77@proxy.test:3128")
    ]
