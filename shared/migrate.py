"""Apply the Alembic migrations under `migrations/` without Flask."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory

from shared.db import make_engine
from shared.file_modes import prepare_sqlite_file
from shared.settings import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def alembic_config(database_url: str, migrations_dir: Path = MIGRATIONS_DIR) -> Config:
    """An Alembic Config pointing at our migrations and the given database."""
    cfg = Config(str(migrations_dir / "alembic.ini"))
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade_database(database_url: str) -> list[str]:
    """Upgrade the database at `database_url` to the newest revision; one line per thing that happened.

    A new database is one line; an upgrade is one line per revision that changes this
    dialect (a migration with a module-level `DIALECTS` tuple is silent elsewhere).
    """
    prepare_sqlite_file(database_url, create_dir=True)
    cfg = alembic_config(database_url)
    scripts = ScriptDirectory.from_config(cfg)
    head = scripts.get_current_head()
    current, dialect = _current_revision(database_url)
    if current == head:
        return [f"schema up to date (revision {head})"]
    pending = list(reversed(list(scripts.iterate_revisions(head, current))))
    command.upgrade(cfg, "head")
    if current is None:
        return [f"schema created (revision {head})"]
    return [f"schema upgraded from revision {current} to {head}"] + [
        f"  {script.revision}: {_title(script)}" for script in pending if _applies(script, dialect)
    ]


def _current_revision(database_url: str) -> tuple[str | None, str]:
    engine = make_engine(database_url, statement_timeout_s=0)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision(), connection.dialect.name
    finally:
        engine.dispose()


def _applies(script: Script, dialect: str) -> bool:
    dialects = getattr(script.module, "DIALECTS", None)
    return dialects is None or dialect in dialects


def _title(script: Script) -> str:
    return (script.doc or "").strip().splitlines()[0] if script.doc else script.revision
