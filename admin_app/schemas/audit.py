"""Audit log entries and the `GET /audit` query."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from admin_app.schemas.common import PaginationQuerySchema
from admin_app.schemas.fields import INT32_MAX

RESOURCES = ("provider", "provider_model", "key")
DEFAULT_AUDIT_PAGE = 100


class AuditQuerySchema(PaginationQuerySchema):
    """Filters of `GET /audit`; 100 entries unless `limit` says otherwise."""

    resource = fields.String(validate=validate.OneOf(RESOURCES), load_default=None)
    resource_id = fields.Integer(validate=validate.Range(min=1, max=INT32_MAX), load_default=None)
    limit = fields.Integer(validate=validate.Range(min=1, max=1000), load_default=DEFAULT_AUDIT_PAGE)


class AuditEntrySchema(Schema):
    """One admin change; `changes` holds new values, secrets as "[redacted]"."""

    id = fields.Integer()
    created_at = fields.DateTime()
    actor = fields.String(metadata={"description": '"admin-token" or "anonymous".'})
    remote_addr = fields.String(allow_none=True)
    action = fields.String(metadata={"description": "create, update, delete or rotate."})
    resource = fields.String()
    resource_id = fields.Integer(allow_none=True)
    changes = fields.Dict()
