"""Record an admin change: an audit row plus a config_version bump, in the caller's transaction.

The proxy polls config_version to reload its in-memory snapshot, so every
change of a provider, model or key must go through `record_change`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import request

from admin_app.auth import current_actor
from admin_app.extensions import db
from shared.db import bump_config_version
from shared.models import AuditLog
from shared.secrets import mask_url_password

REDACTED = "[redacted]"
SECRET_FIELDS = frozenset({"server_key", "personalized_key", "key", "key_hash"})
# Derived from secrets by the caller and safe to show, but the audit row names the secret itself.
DERIVED_FIELDS = frozenset({"server_key_hint", "http_proxy_display"})


def audit_value(field: str, value: Any) -> Any:
    """A JSON-safe, secret-free rendering of a changed field's new value."""
    if field in SECRET_FIELDS:
        return REDACTED
    if field == "http_proxy":
        return mask_url_password(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def describe(changes: dict[str, Any]) -> dict[str, Any]:
    """Render a whole change set with `audit_value`."""
    return {field: audit_value(field, value) for field, value in changes.items() if field not in DERIVED_FIELDS}


def record_change(action: str, resource: str, resource_id: int | None, changes: dict[str, Any]) -> None:
    """Add the audit row and bump config_version; the caller commits."""
    db.session.add(
        AuditLog(
            actor=current_actor(),
            remote_addr=request.remote_addr,
            action=action,
            resource=resource,
            resource_id=resource_id,
            changes=describe(changes),
        )
    )
    bump_config_version(db.session)


def apply_changes(row: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Set the fields of `row` that differ from `data`; return only those that changed."""
    changed: dict[str, Any] = {}
    for field, value in data.items():
        if getattr(row, field) != value:
            setattr(row, field, value)
            changed[field] = value
    return changed
