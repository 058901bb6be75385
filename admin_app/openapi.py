"""`GET /openapi.json`: an OpenAPI 3 document built from the marshmallow schemas.

Built with apispec + its MarshmallowPlugin rather than flask-smorest: smorest
would take over the blueprint, the error handler and the validation flow,
while we keep our own (`api.py`, `errors.py`, `inputs.py`). Paths come from
the app's URL map, so a route missing from `OPERATIONS` still appears.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from flask import Flask, Response, current_app, jsonify
from marshmallow import Schema, validate
from marshmallow.fields import Field
from werkzeug.routing import Rule

from admin_app.api import bp
from admin_app.schemas.audit import AuditEntrySchema, AuditQuerySchema
from admin_app.schemas.common import BLANK_PATTERN, DeletedSchema, ErrorSchema, PaginationQuerySchema
from admin_app.schemas.fields import INT32_MAX, Documented
from admin_app.schemas.key_quota import KeyDetailSchema, KeyQuotaSchema
from admin_app.schemas.keys import (
    KeyInSchema,
    KeyIssuedSchema,
    KeyOutSchema,
    KeyRotateSchema,
    KeyUpdateSchema,
)
from admin_app.schemas.provider_health import ProviderHealthSchema
from admin_app.schemas.provider_models import (
    ProviderModelInSchema,
    ProviderModelOutSchema,
    ProviderModelQuerySchema,
)
from admin_app.schemas.providers import (
    ProviderDeletedSchema,
    ProviderInSchema,
    ProviderOutSchema,
    ProviderWrittenSchema,
)
from admin_app.schemas.stats import ConversationStatsSchema, StatsQuerySchema, TotalStatsSchema
from admin_app.schemas.usage import (
    ExportQuerySchema,
    KeyUsageQuerySchema,
    KeyUsageSchema,
    UsageQuerySchema,
    UsageReportSchema,
)

API_TITLE = "NexusAI admin API"
API_VERSION = "1.0.0"
_CACHE_KEY = "nexusai.openapi"
_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@dataclass(frozen=True)
class Operation:
    """What the document says about one view."""

    response: type[Schema] | None = None
    many: bool = False
    status: int = 200
    body: type[Schema] | None = None
    body_required: bool = True
    query: type[Schema] | None = None
    tag: str = "admin"


OPERATIONS: dict[str, Operation] = {
    "list_providers": Operation(ProviderOutSchema, many=True, query=PaginationQuerySchema, tag="providers"),
    "create_provider": Operation(ProviderWrittenSchema, status=201, body=ProviderInSchema, tag="providers"),
    "get_provider": Operation(ProviderOutSchema, tag="providers"),
    "update_provider": Operation(ProviderWrittenSchema, body=ProviderInSchema, tag="providers"),
    "delete_provider": Operation(ProviderDeletedSchema, tag="providers"),
    "list_models": Operation(ProviderModelOutSchema, many=True, query=ProviderModelQuerySchema, tag="models"),
    "list_provider_models": Operation(
        ProviderModelOutSchema, many=True, query=PaginationQuerySchema, tag="models"
    ),
    "create_model": Operation(ProviderModelOutSchema, status=201, body=ProviderModelInSchema, tag="models"),
    "get_model": Operation(ProviderModelOutSchema, tag="models"),
    "update_model": Operation(ProviderModelOutSchema, body=ProviderModelInSchema, tag="models"),
    "delete_model": Operation(DeletedSchema, tag="models"),
    "list_keys": Operation(KeyOutSchema, many=True, query=PaginationQuerySchema, tag="keys"),
    "create_key": Operation(KeyIssuedSchema, status=201, body=KeyInSchema, tag="keys"),
    "get_key": Operation(KeyDetailSchema, tag="keys"),
    "quota": Operation(KeyQuotaSchema, tag="keys"),
    "update_key": Operation(KeyOutSchema, body=KeyUpdateSchema, tag="keys"),
    "delete_key": Operation(DeletedSchema, tag="keys"),
    "rotate_key": Operation(KeyIssuedSchema, body=KeyRotateSchema, body_required=False, tag="keys"),
    "total": Operation(TotalStatsSchema, query=StatsQuerySchema, tag="stats"),
    "conversation": Operation(ConversationStatsSchema, query=StatsQuerySchema, tag="stats"),
    "usage_report": Operation(UsageReportSchema, query=UsageQuerySchema, tag="stats"),
    "usage_export": Operation(query=ExportQuerySchema, tag="stats"),
    "key_usage": Operation(KeyUsageSchema, query=KeyUsageQuerySchema, tag="stats"),
    "list_audit": Operation(AuditEntrySchema, many=True, query=AuditQuerySchema, tag="audit"),
    "health": Operation(tag="meta"),
    "openapi_document": Operation(tag="meta"),
    "metrics_exposition": Operation(tag="meta"),
    "provider_health": Operation(ProviderHealthSchema, tag="providers"),
}

_ERROR_TEXT = {
    "400": "Bad input: an invalid body or query parameter, or a request that is not valid HTTP",
    "401": "Missing or invalid admin token",
    "404": "Unknown id or path",
    "409": "Conflict with existing data, or a body naming a provider that does not exist",
    "413": "Body larger than MAX_BODY_BYTES",
    "414": "Request line longer than the server accepts",
    "431": "Request headers larger than the server accepts",
    "503": "Database unavailable",
}
_WRITES = {"post", "put", "patch", "delete"}

# Which operations read what a create returned; stateful fuzzing follows these.
_LINKS: dict[str, tuple[str, list[str]]] = {
    "create_provider": ("provider_id", [
        "get_provider", "update_provider_put", "update_provider_patch", "delete_provider",
        "list_provider_models", "provider_health",
    ]),
    "create_model": ("model_id", ["get_model", "update_model_put", "update_model_patch", "delete_model"]),
    "create_key": ("key_id", [
        "get_key", "quota", "update_key_put", "update_key_patch", "delete_key", "rotate_key", "key_usage",
    ]),
}


def _schema_name(schema: Any) -> str:
    """`ProviderInSchema` -> `ProviderIn`; its partial form (PUT/PATCH bodies) -> `ProviderInChanges`."""
    name = resolve_schema_cls(schema).__name__.removesuffix("Schema")
    return f"{name}Changes" if getattr(schema, "partial", False) is True else name


def _exact_field(converter: Any, field: Field, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """What apispec cannot infer: our fields' own rules, exclusive bounds, blanks read as null."""
    if isinstance(field, Documented):
        field.json_schema(ret)
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            if validator.min is not None and not validator.min_inclusive:
                ret["exclusiveMinimum"] = True
            if validator.max is not None and not validator.max_inclusive:
                ret["exclusiveMaximum"] = True
    if field.name in getattr(field.parent, "blank_to_none", ()):
        nullable = ret.pop("nullable", False)
        described = {k: ret.pop(k) for k in ("description",) if k in ret}
        value = dict(ret)
        ret.clear()
        ret.update(anyOf=[value, {"type": "string", "pattern": BLANK_PATTERN}], **described)
        if nullable:
            ret["nullable"] = True
    return {}


def _openapi_path(rule: Rule) -> str:
    """`/providers/<int:provider_id>` -> `/providers/{provider_id}`."""
    return _ARGUMENT.sub(r"{\1}", rule.rule)


def _path_parameters(rule: Rule) -> list[dict[str, Any]]:
    params = []
    for name in sorted(rule.arguments):
        if f"<int:{name}>" in rule.rule:
            # werkzeug's int converter: digits only, no sign, and our ids fit a 32-bit column.
            schema: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": INT32_MAX}
        elif f"<path:{name}>" in rule.rule:
            schema = {"type": "string", "minLength": 1, "pattern": "^[^/]"}
        else:
            schema = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
        params.append({"in": "path", "name": name, "required": True, "schema": schema})
    return params


def _operation_id(name: str, method: str, methods: set[str]) -> str:
    # One view may serve PUT and PATCH; operation ids must still be unique.
    return name if len(methods) == 1 else f"{name}_{method}"


def _operation(rule: Rule, method: str, view: Any) -> dict[str, Any]:
    name = rule.endpoint.rpartition(".")[2]
    op = OPERATIONS.get(name, Operation())
    summary = (view.__doc__ or name).strip().splitlines()[0]
    methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
    has_body = op.body is not None and method in {"post", "put", "patch"}
    responses: dict[str, Any] = {}
    success: dict[str, Any] = {"description": summary}
    if op.response is not None:
        schema: Any = {"type": "array", "items": op.response} if op.many else op.response
        success["content"] = {"application/json": {"schema": schema}}
    if name in _LINKS:
        parameter, targets = _LINKS[name]
        success["links"] = {
            target: {"operationId": target, "parameters": {parameter: "$response.body#/id"}} for target in targets
        }
    responses[str(op.status)] = success
    statuses = ["400", "414", "431", "503"]
    if name != "health":
        statuses.append("401")
    if rule.arguments or name == "metrics_exposition":
        statuses.append("404")
    if method in _WRITES:
        statuses.append("409")
    if has_body or method in _WRITES:
        statuses.append("413")
    for status in sorted(statuses):
        responses[status] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": ErrorSchema}},
        }
    operation: dict[str, Any] = {
        "operationId": _operation_id(name, method, {m.lower() for m in methods}),
        "summary": summary,
        "tags": [op.tag],
        "parameters": _path_parameters(rule),
        "responses": responses,
    }
    if op.query is not None:
        operation["parameters"].append({"in": "query", "schema": op.query})
    if has_body:
        body = op.body(partial=True) if method in {"put", "patch"} else op.body  # type: ignore[misc]
        operation["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": body}},
        }
    if name == "health":
        operation["security"] = []  # /health is open even with ADMIN_TOKEN set
    return operation


def _plain_query_parameters(document: dict[str, Any]) -> None:
    """A query parameter is absent or a string: no null, no null default."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                if param.get("in") == "query":
                    schema = param.get("schema", {})
                    schema.pop("nullable", None)
                    if "default" in schema and schema["default"] is None:
                        del schema["default"]
                    if None in schema.get("enum", ()):
                        schema["enum"] = [value for value in schema["enum"] if value is not None]


def build_document(app: Flask) -> dict[str, Any]:
    """Generate the OpenAPI document for every route of the admin blueprint."""
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(
        title=API_TITLE,
        version=API_VERSION,
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "Providers, models, client keys, usage statistics and the audit log."},
        security=[{"adminToken": []}],
    )
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_exact_field)
    spec.components.security_scheme("adminToken", {"type": "http", "scheme": "bearer"})
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith(f"{bp.name}."):
            continue
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(_openapi_path(rule), {})[method.lower()] = _operation(rule, method.lower(), view)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    _plain_query_parameters(document)
    return document


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3 document of this API."""
    document = current_app.extensions.get(_CACHE_KEY)
    if document is None:
        document = build_document(current_app)
        current_app.extensions[_CACHE_KEY] = document
    return jsonify(document)
