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
from flask import Flask, Response, current_app, jsonify
from marshmallow import Schema
from werkzeug.routing import Rule

from admin_app.api import bp
from admin_app.schemas.audit import AuditEntrySchema, AuditQuerySchema
from admin_app.schemas.common import DeletedSchema, ErrorSchema, PaginationQuerySchema
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

_ERRORS = {
    "400": "Bad input",
    "401": "Missing or invalid admin token",
    "404": "Unknown id or path",
    "409": "Conflict with existing data",
}


def _openapi_path(rule: Rule) -> str:
    """`/providers/<int:provider_id>` -> `/providers/{provider_id}`."""
    return _ARGUMENT.sub(r"{\1}", rule.rule)


def _path_parameters(rule: Rule) -> list[dict[str, Any]]:
    params = []
    for name in sorted(rule.arguments):
        kind = "integer" if f"<int:{name}>" in rule.rule else "string"
        params.append({"in": "path", "name": name, "required": True, "schema": {"type": kind}})
    return params


def _operation(rule: Rule, method: str, view: Any) -> dict[str, Any]:
    name = rule.endpoint.rpartition(".")[2]
    op = OPERATIONS.get(name, Operation())
    summary = (view.__doc__ or name).strip().splitlines()[0]
    responses: dict[str, Any] = {}
    if op.response is not None:
        schema: Any = {"type": "array", "items": op.response} if op.many else op.response
        responses[str(op.status)] = {
            "description": summary,
            "content": {"application/json": {"schema": schema}},
        }
    else:
        responses[str(op.status)] = {"description": summary}
    errors = {"503": "Database unavailable"} if name == "health" else _ERRORS
    for status, description in errors.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": ErrorSchema}},
        }
    methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
    operation: dict[str, Any] = {
        # One view may serve PUT and PATCH; operation ids must still be unique.
        "operationId": name if len(methods) == 1 else f"{name}_{method}",
        "summary": summary,
        "tags": [op.tag],
        "parameters": _path_parameters(rule),
        "responses": responses,
    }
    if op.query is not None:
        operation["parameters"].append({"in": "query", "schema": op.query})
    if op.body is not None and method in {"post", "put", "patch"}:
        operation["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": op.body}},
        }
    if name == "health":
        operation["security"] = []  # /health is open even with ADMIN_TOKEN set
    return operation


def build_document(app: Flask) -> dict[str, Any]:
    """Generate the OpenAPI document for every route of the admin blueprint."""
    spec = APISpec(
        title=API_TITLE,
        version=API_VERSION,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Providers, models, client keys, usage statistics and the audit log."},
        security=[{"adminToken": []}],
    )
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
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3 document of this API."""
    document = current_app.extensions.get(_CACHE_KEY)
    if document is None:
        document = build_document(current_app)
        current_app.extensions[_CACHE_KEY] = document
    return jsonify(document)
