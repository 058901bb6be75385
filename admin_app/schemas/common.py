"""Schemas every resource shares: errors, deletions and pagination."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, post_load, pre_load, validate

from admin_app.schemas.fields import INT32_MAX

MAX_PAGE = 1000
# An optional string of spaces alone (or nothing) means null in the fields of `blank_to_none`.
BLANK_PATTERN = "^ *$"


class ErrorBodySchema(Schema):
    """The inside of every error response."""

    message = fields.String(required=True)
    type = fields.String(required=True)
    code = fields.String(required=True)
    details = fields.Dict(required=True, metadata={"description": "Field errors, keyed by field name."})


class ErrorSchema(Schema):
    """`{"error": {...}}`: the shape of every admin error."""

    error = fields.Nested(ErrorBodySchema, required=True)


class DeletedSchema(Schema):
    """The answer to a DELETE."""

    id = fields.Integer(required=True)
    deleted = fields.Boolean(required=True)


class PaginationQuerySchema(Schema):
    """`?limit=&offset=` on list endpoints; no limit means everything."""

    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_PAGE), load_default=None)
    offset = fields.Integer(validate=validate.Range(min=0, max=INT32_MAX), load_default=0)


class TidyInputSchema(Schema):
    """Input tidying shared by write schemas: optional strings in `blank_to_none` that are empty or
    spaces alone become null, and a null description becomes empty."""

    blank_to_none: tuple[str, ...] = ()

    @pre_load
    def _blank_is_none(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data
        blanks = {f: None for f in self.blank_to_none if isinstance(data.get(f), str) and not data[f].strip(" ")}
        return {**data, **blanks} if blanks else data

    @post_load
    def _none_description_is_empty(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "description" in data and data["description"] is None:
            data["description"] = ""
        return data
