"""`GET /audit`: the admin change log, newest first."""

from __future__ import annotations

from flask import Response, jsonify
from sqlalchemy import select

from admin_app.api import bp
from admin_app.extensions import db
from admin_app.inputs import load_query
from admin_app.schemas.audit import AuditEntrySchema, AuditQuerySchema
from shared.models import AuditLog

audit_query = AuditQuerySchema()
audit_out = AuditEntrySchema()


@bp.get("/audit")
def list_audit() -> Response:
    """Audit entries, newest first; filter by `resource` and `resource_id`."""
    args = load_query(audit_query)
    query = select(AuditLog).order_by(AuditLog.id.desc()).limit(args["limit"]).offset(args["offset"])
    if args["resource"] is not None:
        query = query.where(AuditLog.resource == args["resource"])
    if args["resource_id"] is not None:
        query = query.where(AuditLog.resource_id == args["resource_id"])
    return jsonify(audit_out.dump(db.session.scalars(query), many=True))
