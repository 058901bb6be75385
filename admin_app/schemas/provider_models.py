"""Provider model bodies and responses; prices are USD per 1M tokens."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from admin_app.schemas.common import PaginationQuerySchema, TidyInputSchema
from admin_app.schemas.fields import INT32_MAX, Name, StrictBoolean, StrictInteger, Text, Usd

MAX_PRICE_USD = 1_000_000


class ProviderModelInSchema(TidyInputSchema):
    """POST body (PUT/PATCH take the same fields, all optional)."""

    provider_id = StrictInteger(required=True, validate=validate.Range(min=1, max=INT32_MAX))
    model_name = Name(max_length=200, required=True, metadata={"description": "What clients ask for."})
    upstream_name = Name(
        max_length=200, allow_none=True, metadata={"description": "Sent upstream; null means model_name."}
    )
    description = Text(allow_none=True, validate=validate.Length(max=10_000))
    input_price = Usd(MAX_PRICE_USD, allow_none=True)
    output_price = Usd(MAX_PRICE_USD, allow_none=True)
    cached_input_price = Usd(MAX_PRICE_USD, allow_none=True)
    cache_write_price = Usd(MAX_PRICE_USD, allow_none=True)
    context_length = StrictInteger(allow_none=True, validate=validate.Range(min=1, max=INT32_MAX))
    enabled = StrictBoolean()

    blank_to_none = ("upstream_name",)


class ProviderModelOutSchema(Schema):
    """A provider model as every endpoint returns it."""

    id = fields.Integer()
    provider_id = fields.Integer()
    provider_name = fields.String(attribute="provider.name")
    model_name = fields.String()
    upstream_name = fields.String(attribute="effective_upstream_name")
    description = fields.String()
    input_price = fields.Float(allow_none=True)
    output_price = fields.Float(allow_none=True)
    cached_input_price = fields.Float(allow_none=True)
    cache_write_price = fields.Float(allow_none=True)
    context_length = fields.Integer(allow_none=True)
    enabled = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class ProviderModelQuerySchema(PaginationQuerySchema):
    """`GET /provider_models?provider_id=&limit=&offset=`."""

    provider_id = fields.Integer(validate=validate.Range(min=1, max=INT32_MAX), load_default=None)
