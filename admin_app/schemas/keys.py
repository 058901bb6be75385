"""Client key bodies and responses; the key itself is write-only (shown once if generated)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from admin_app.schemas.fields import (
    INT32_MAX,
    INT64_MAX,
    Documented,
    Name,
    StrictBoolean,
    StrictInteger,
    Usd,
    UtcDateTime,
    ecma_pattern,
)

QUOTA_PERIODS = ("total", "daily", "monthly")
MAX_BUDGET_USD = 1_000_000_000
MAX_SCOPE_ITEMS = 1000


class ClientKey(Documented, fields.String):
    """A caller-supplied client key: 8 to 256 printable ASCII characters, no spaces (it travels in a header)."""

    pattern = r"^[!-~]{8,256}$"
    _match = ecma_pattern(pattern).search

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        key = super()._deserialize(value, attr, data, **kwargs)
        if not 8 <= len(key) <= 256:
            raise ValidationError("Must be 8 to 256 characters.")
        if self._match(key) is None:
            raise ValidationError("Must be printable ASCII without spaces.")
        return key

    def json_schema(self, prop: dict[str, Any]) -> None:
        """Length and alphabet."""
        prop.update(minLength=8, maxLength=256, pattern=self.pattern)


def _positive(maximum: int) -> validate.Range:
    return validate.Range(min=1, max=maximum)


class KeyUpdateSchema(Schema):
    """The fields of a key; PUT/PATCH take any of them, the key value changes only through rotate."""

    name = Name(max_length=100, required=True)
    provider_ids = fields.List(
        StrictInteger(validate=_positive(INT32_MAX)),
        validate=validate.Length(max=MAX_SCOPE_ITEMS),
        metadata={"description": "Providers the key may use; empty means all."},
    )
    models = fields.List(
        Name(max_length=200),
        validate=validate.Length(max=MAX_SCOPE_ITEMS),
        metadata={"description": "Model names the key may use; empty means all."},
    )
    rpm = StrictInteger(allow_none=True, validate=_positive(INT32_MAX))
    tpm = StrictInteger(allow_none=True, validate=_positive(INT32_MAX))
    max_concurrency = StrictInteger(allow_none=True, validate=_positive(INT32_MAX))
    token_quota = StrictInteger(allow_none=True, validate=_positive(INT64_MAX))
    budget_usd = Usd(MAX_BUDGET_USD, allow_none=True)
    quota_period = fields.String(validate=validate.OneOf(QUOTA_PERIODS))
    expires_at = UtcDateTime(allow_none=True, metadata={"description": "ISO 8601; naive means UTC."})
    enabled = StrictBoolean()
    archive_messages = StrictBoolean(
        allow_none=True, metadata={"description": "Overrides ARCHIVE_MESSAGES; null inherits it."}
    )


class KeyInSchema(KeyUpdateSchema):
    """POST body; without `key` the server generates one and returns it once."""

    key = ClientKey(load_only=True, metadata={"description": "Optional caller-chosen key value."})


class KeyRotateSchema(Schema):
    """Optional rotate body: a caller-chosen new key value, else one is generated."""

    key = ClientKey(load_only=True)


class KeySummarySchema(Schema):
    """A client key named without its value."""

    id = fields.Integer()
    name = fields.String()
    key_hint = fields.String()


class KeyOutSchema(Schema):
    """A client key as every endpoint returns it (never the key or its hash)."""

    id = fields.Integer()
    name = fields.String()
    key_hint = fields.String()
    provider_ids = fields.List(fields.Integer())
    models = fields.List(fields.String())
    rpm = fields.Integer(allow_none=True)
    tpm = fields.Integer(allow_none=True)
    max_concurrency = fields.Integer(allow_none=True)
    token_quota = fields.Integer(allow_none=True)
    budget_usd = fields.Float(allow_none=True)
    quota_period = fields.String()
    expires_at = fields.DateTime(allow_none=True)
    enabled = fields.Boolean()
    archive_messages = fields.Boolean(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)


class KeyIssuedSchema(KeyOutSchema):
    """Create/rotate answer; `key` is present only when the server generated the value."""

    key = fields.String(metadata={"description": "The full key; shown this once only."})
