"""Apply the Alembic migrations under `migrations/` without Flask."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.settings import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def alembic_config(database_url: str, migrations_dir: Path = MIGRATIONS_DIR) -> Config:
    """An Alembic Config pointing at our migrations and the given database."""
    cfg = Config(str(migrations_dir / "alembic.ini"))
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade_database(database_url: str) -> None:
    """Upgrade the database at `database_url` to the newest revision."""
    if database_url.startswith("sqlite:///"):
        Path(database_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), "head")
