"""Alembic environment: works under Flask-Migrate and from shared.migrate alike."""

from __future__ import annotations

import logging

from alembic import context

from shared.db import make_engine
from shared.models import Base

config = context.config
logger = logging.getLogger("alembic.env")
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    # Invoked through Flask-Migrate's CLI: take the app's engine URL.
    from flask import current_app

    engine = current_app.extensions["migrate"].db.engine
    return engine.url.render_as_string(hide_password=False)


def _skip_empty(ctx, revision, directives):  # type: ignore[no-untyped-def]
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        logger.info("No changes in schema detected.")


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # Backfills may run long: no statement limit here.
    engine = make_engine(_database_url(), statement_timeout_s=0)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                process_revision_directives=_skip_empty,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
