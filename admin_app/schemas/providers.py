"""Provider bodies and responses; `server_key` is load-only, shown only as a hint."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from admin_app.schemas.common import TidyInputSchema
from admin_app.schemas.fields import (
    INT32_MAX,
    HttpUrl,
    Name,
    Slug,
    StrictBoolean,
    StrictFloat,
    StrictInteger,
    Text,
)
from admin_app.schemas.keys import ClientKey, KeySummarySchema
from shared.models import Provider
from shared.provider_kinds import CLIENT_APIS, PROVIDER_KINDS, provider_apis

UPSTREAM_SCHEMES = frozenset({"http", "https"})
PROXY_SCHEMES = frozenset({"http", "https", "socks4", "socks4a", "socks5", "socks5h"})
MAX_TIMEOUT_S = 3600.0


def _distinct(values: list[str]) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("Must not repeat an API.")


class ProviderInSchema(TidyInputSchema):
    """POST body (PUT/PATCH take the same fields, all optional)."""

    # No "/": clients pick a provider explicitly with "provider_name/model".
    name = Name(max_length=100, forbid="/", required=True)
    server_url = HttpUrl(
        UPSTREAM_SCHEMES,
        allow_credentials=False,
        required=True,
        metadata={"description": "Base URL, e.g. https://api.openai.com/v1"},
    )
    server_key = Text(
        load_only=True, validate=validate.Length(max=500), metadata={"description": "Write-only."}
    )
    personalized_key = ClientKey(
        load_only=True,
        metadata={"description": "Becomes a client key scoped to this provider; write-only."},
    )
    description = Text(allow_none=True, validate=validate.Length(max=10_000))
    enabled = StrictBoolean()
    http_proxy = HttpUrl(PROXY_SCHEMES, allow_credentials=True, allow_none=True)
    timeout_s = StrictFloat(
        validate=validate.Range(min=0, max=MAX_TIMEOUT_S, min_inclusive=False),
        metadata={"description": "Seconds to the first byte of the reply, and between stream events."},
    )
    connect_timeout_s = StrictFloat(
        validate=validate.Range(min=0, max=MAX_TIMEOUT_S, min_inclusive=False),
        metadata={"description": "Seconds to establish the connection (TCP, TLS, proxy tunnel)."},
    )
    kind = fields.String(
        validate=validate.OneOf(PROVIDER_KINDS),
        metadata={"description": "The provider's wire format: which adapter the proxy speaks to it with."},
    )
    apis = fields.List(
        fields.String(validate=validate.OneOf(CLIENT_APIS)),
        allow_none=True,
        validate=[validate.Length(min=1), _distinct],
        metadata={"description": "Client APIs the provider serves natively; null: its kind's defaults.",
                  "uniqueItems": True},
    )
    api_version = Slug(
        40, allow_none=True,
        metadata={"description": "azure: the api-version query (default 2024-10-21; Responses 2025-04-01-preview; "
                                 "none on an /openai/v1 URL); gemini: the URL's version (default v1beta); "
                                 "other kinds ignore it. Null or blank: the default."},
    )
    priority = StrictInteger(
        validate=validate.Range(min=-INT32_MAX, max=INT32_MAX),
        metadata={"description": "Higher is tried first."},
    )
    weight = StrictInteger(validate=validate.Range(min=1, max=INT32_MAX))

    blank_to_none = ("http_proxy", "api_version")


class ProviderOutSchema(Schema):
    """A provider as every endpoint returns it (never the server key)."""

    id = fields.Integer()
    name = fields.String()
    server_url = fields.String()
    server_key_hint = fields.String()
    description = fields.String()
    enabled = fields.Boolean()
    http_proxy = fields.String(
        attribute="http_proxy_display", allow_none=True, metadata={"description": "Password masked."}
    )
    kind = fields.String()
    apis = fields.Method(
        "_apis", metadata={"type": "array", "items": {"type": "string"},
                           "description": "The client APIs it serves natively (its kind's defaults unless set)."},
    )
    api_version = fields.String(allow_none=True)
    timeout_s = fields.Float()
    connect_timeout_s = fields.Float()
    priority = fields.Integer()
    weight = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    def _apis(self, provider: Provider) -> list[str]:
        served = provider_apis(provider.kind, provider.apis)
        return [api for api in CLIENT_APIS if api in served]



class ProviderWrittenSchema(ProviderOutSchema):
    """POST/PUT/PATCH answer: the provider, plus the client key made from `personalized_key`."""

    personalized_key = fields.Nested(KeySummarySchema, required=False)


class ProviderDeletedSchema(Schema):
    """DELETE answer: what went with the provider."""

    id = fields.Integer()
    deleted = fields.Boolean()
    models_deleted = fields.Integer()
    keys_descoped = fields.List(
        fields.Integer(), metadata={"description": "Keys that lost this provider."}
    )
    keys_disabled = fields.List(
        fields.Integer(), metadata={"description": "Keys disabled because their scope emptied."}
    )
