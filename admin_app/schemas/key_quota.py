"""Schemas of a key's consumption and quota report."""

from __future__ import annotations

from marshmallow import Schema, fields

from admin_app.schemas.keys import KeyOutSchema


class KeyDetailSchema(KeyOutSchema):
    """One key with what it has used in its current quota period."""

    used_tokens = fields.Integer(metadata={"description": "Tokens recorded in the current period."})
    used_usd = fields.Float(metadata={"description": "USD recorded in the current period."})
    period_resets_at = fields.DateTime(allow_none=True, metadata={"description": "Null for quota_period=total."})


class QuotaFiguresSchema(Schema):
    """Tokens and USD side by side."""

    tokens = fields.Integer(allow_none=True)
    usd = fields.Float(allow_none=True)


class RateLimitsSchema(Schema):
    """A key's rate limits (null = unlimited)."""

    rpm = fields.Integer(allow_none=True)
    tpm = fields.Integer(allow_none=True)
    max_concurrency = fields.Integer(allow_none=True)


class KeyQuotaSchema(Schema):
    """The AI Hub quota shape: limits, used, remaining, usage percent, reset date, rate limits."""

    key_id = fields.Integer()
    name = fields.String()
    key_hint = fields.String()
    enabled = fields.Boolean()
    expires_at = fields.DateTime(allow_none=True)
    quota_period = fields.String()
    period_start = fields.DateTime(allow_none=True)
    reset_date = fields.DateTime(allow_none=True)
    limits = fields.Nested(QuotaFiguresSchema)
    used = fields.Nested(QuotaFiguresSchema)
    remaining = fields.Nested(QuotaFiguresSchema)
    usage_percent = fields.Nested(QuotaFiguresSchema)
    rate_limits = fields.Nested(RateLimitsSchema)
