"""`GET /health`: liveness plus a database round trip; open even when ADMIN_TOKEN is set."""

from __future__ import annotations

import logging

from flask import Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from admin_app.api import bp
from admin_app.extensions import db
from shared.db import read_config_version

logger = logging.getLogger("nexusai.admin")


def _database_error(exc: SQLAlchemyError) -> str:
    # The driver's own message, without SQLAlchemy's SQL echo and links.
    origin = getattr(exc, "orig", None) or exc
    lines = str(origin).strip().splitlines()
    return f"{type(origin).__name__}: {lines[0] if lines else 'no details'}"


@bp.get("/health")
def health() -> Response | tuple[Response, int]:
    """Report the admin's status and whether the (migrated) database answers."""
    try:
        read_config_version(db.session)
    except SQLAlchemyError as exc:
        db.session.rollback()
        message = _database_error(exc)
        logger.error("health check: database unavailable: %s", message)
        return jsonify({"status": "error", "service": "admin", "database": message}), 503
    return jsonify({"status": "ok", "service": "admin", "database": "ok"})
