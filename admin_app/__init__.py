"""The Flask admin app on :8000: providers, models, client keys, stats, audit.

Imports `shared`, Flask and its extensions; never aiohttp, never `proxy_app`.
Layout: one blueprint (`api.py`), one module per resource (`providers.py`,
`provider_models.py`, `keys.py`, `stats.py`, `audit.py`, `health.py`,
`openapi.py`), marshmallow schemas in `schemas/`, every error shaped by
`errors.py`, auth in `auth.py`, the access log in `access_log.py`.
"""

from __future__ import annotations

import logging

from flask import Flask

from admin_app.extensions import db, migrate
from shared.db import configure_engine, engine_options
from shared.file_modes import prepare_sqlite_file
from shared.settings import Settings

__all__ = ["create_app", "db", "migrate"]

logger = logging.getLogger("nexusai.admin")


def create_app(settings: Settings | None = None, warn_unauthenticated: bool = True) -> Flask:
    """Build the admin application for `settings` (default: from the environment)."""
    if settings is None:
        settings = Settings.from_env()

    prepare_sqlite_file(settings.database_url)
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        # hide_parameters keeps bound values (server keys, key hashes) out of DB error text.
        SQLALCHEMY_ENGINE_OPTIONS={
            **engine_options(settings.database_url, settings.db_connect_timeout_s, settings.db_statement_timeout_s),
            "hide_parameters": True,
        },
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        NEXUSAI_SETTINGS=settings,
        NEXUSAI_SECRET_BOX=settings.secret_box(),
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]

    db.init_app(app)
    migrate.init_app(app, db)
    with app.app_context():
        configure_engine(db.engine, settings.db_statement_timeout_s)

    from admin_app import (  # noqa: F401  # noqa: F401
        access_log,
        audit,
        auth,
        console,
        errors,
        health,
        key_quota,
        key_usage,
        keys,
        metrics,
        openapi,
        provider_health,
        provider_models,
        providers,
        stats,
        usage,
    )
    from admin_app.api import bp

    access_log.init_app(app)
    metrics.init_app(app, settings.metrics_enabled)
    auth.init_app(app, settings)
    errors.init_app(app)
    app.register_blueprint(bp)
    console.init_app(app, settings)

    if not settings.admin_token and warn_unauthenticated:
        logger.warning(
            "ADMIN_TOKEN is not set: the admin API is unauthenticated and must stay on loopback"
        )
    return app
