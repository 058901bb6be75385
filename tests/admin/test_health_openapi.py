"""`/health` (with a database round trip) and the generated OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.admin.conftest import AdminClient

SEED_PATHS = {
    "/providers": {"get", "post"},
    "/providers/{provider_id}": {"get", "put", "patch", "delete"},
    "/provider_models": {"get", "post"},
    "/providers/{provider_id}/models": {"get"},
    "/provider_models/{model_id}": {"get", "put", "patch", "delete"},
    "/keys": {"get", "post"},
    "/keys/{key_id}": {"get", "put", "patch", "delete"},
    "/keys/{key_id}/rotate": {"post"},
    "/keys/{key_id}/quota": {"get"},
    "/stats/total": {"get"},
    "/stats/conversation/{conversation_id}": {"get"},
    "/keys/{key_id}/usage": {"get"},
    "/usage": {"get"},
    "/usage/export": {"get"},
    "/audit": {"get"},
    "/health": {"get"},
    "/openapi.json": {"get"},
    "/metrics": {"get"},
    "/providers/{provider_id}/health": {"get"},
}


@pytest.mark.db
def test_health_ok(admin: AdminClient) -> None:
    assert admin.ok("GET", "/health") == {"status": "ok", "service": "admin", "database": "ok"}


def test_health_is_503_when_the_database_is_unreachable(
    start_admin: Callable[..., AdminClient], settings: Settings, tmp_path: Path
) -> None:
    broken = settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'missing-dir' / 'nexusai.db'}")
    admin = start_admin(broken)
    response = admin.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["service"] == "admin"
    assert "unable to open database file" in body["database"]
    # Other endpoints answer with the error shape, not HTML.
    response = admin.get("/providers")
    assert response.status_code == 503 and response.json()["error"]["code"] == "database_unavailable"


@pytest.mark.db
def test_openapi_document(admin: AdminClient) -> None:
    response = admin.get("/openapi.json")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    doc = json.loads(response.text)
    assert doc["openapi"].startswith("3.") and doc["info"]["title"]
    assert {path: set(ops) for path, ops in doc["paths"].items()} == SEED_PATHS

    schemas = doc["components"]["schemas"]
    provider_in = schemas["ProviderIn"]
    assert {"name", "server_url", "server_key", "personalized_key"} <= set(provider_in["properties"])
    assert set(provider_in["required"]) == {"name", "server_url"}
    assert "server_key" not in schemas["ProviderOut"]["properties"]
    assert "server_key_hint" in schemas["ProviderOut"]["properties"]
    assert "key_hash" not in json.dumps(schemas)
    create = doc["paths"]["/providers"]["post"]
    body_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": "#/components/schemas/ProviderIn"}
    assert "201" in create["responses"] and "400" in create["responses"]
    stats_params = {p["name"] for p in doc["paths"]["/stats/total"]["get"]["parameters"]}
    assert stats_params == {"start_date", "end_date", "key_id", "provider_id", "model"}
    assert doc["paths"]["/health"]["get"]["security"] == []
    # Every $ref resolves.
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


@pytest.mark.db
def test_openapi_document_validates(admin: AdminClient) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(admin.ok("GET", "/openapi.json"))


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []
