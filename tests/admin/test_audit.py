"""Every change writes an audit row and bumps config_version in the same transaction."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.db import make_engine, read_config_version
from shared.settings import Settings
from tests.admin.conftest import SEED_MODEL, SEED_PROVIDER, AdminClient, Dump, assert_error

pytestmark = pytest.mark.db


def _version(settings: Settings) -> int:
    engine = make_engine(settings.database_url)
    try:
        from sqlalchemy.orm import Session

        with Session(engine) as session:
            return read_config_version(session)
    finally:
        engine.dispose()


def test_every_change_bumps_config_version_and_is_audited(admin: AdminClient, settings: Settings) -> None:
    changes = [
        ("POST", "/providers", {"json": {"name": "p", "server_url": "https://p.test"}}, 201,
         ("create", "provider")),
        ("PUT", "/providers/1", {"json": {"priority": 3}}, 200, ("update", "provider")),
        ("PATCH", "/providers/1", {"json": {"enabled": False}}, 200, ("update", "provider")),
        ("POST", "/provider_models", {"json": SEED_MODEL}, 201, ("create", "provider_model")),
        ("PUT", "/provider_models/1", {"json": {"input_price": 1}}, 200, ("update", "provider_model")),
        ("PATCH", "/provider_models/1", {"json": {"enabled": False}}, 200, ("update", "provider_model")),
        ("POST", "/keys", {"json": {"name": "k"}}, 201, ("create", "key")),
        ("PUT", "/keys/1", {"json": {"rpm": 1}}, 200, ("update", "key")),
        ("PATCH", "/keys/1", {"json": {"enabled": False}}, 200, ("update", "key")),
        ("POST", "/keys/1/rotate", {}, 200, ("rotate", "key")),
        ("DELETE", "/keys/1", {}, 200, ("delete", "key")),
        ("DELETE", "/provider_models/1", {}, 200, ("delete", "provider_model")),
        ("DELETE", "/providers/1", {}, 200, ("delete", "provider")),
    ]
    version = _version(settings)
    assert version == 0
    for method, path, kwargs, status, (action, resource) in changes:
        admin.ok(method, path, status, **kwargs)
        new_version = _version(settings)
        assert new_version > version, f"{method} {path} did not bump config_version"
        version = new_version
        latest = admin.ok("GET", "/audit?limit=1")[0]
        assert (latest["action"], latest["resource"]) == (action, resource), f"{method} {path}: {latest}"
        assert latest["actor"] == "anonymous" and latest["remote_addr"] == "127.0.0.1"
        assert latest["created_at"].endswith(("Z", "+00:00"))


def test_failed_changes_neither_bump_nor_audit(admin: AdminClient, dump_db: Callable[[], Dump]) -> None:
    admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    before = dump_db()
    assert_error(admin.post("/providers", json=SEED_PROVIDER), 409)
    assert_error(admin.patch("/providers/1", json={"weight": 0}), 400)
    assert_error(admin.delete("/providers/5"), 404)
    assert dump_db() == before


def test_update_records_changed_fields_only(admin: AdminClient, dump_db: Callable[[], Dump]) -> None:
    admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    admin.ok("PATCH", "/providers/1", json={"description": "OpenAI official API", "weight": 2})
    assert admin.ok("GET", "/audit?limit=1")[0]["changes"] == {"weight": 2}
    # A no-op update changes nothing at all.
    before = dump_db()
    admin.ok("PUT", "/providers/1", json={"weight": 2})
    assert dump_db() == before


def test_filters_order_and_pagination(admin: AdminClient) -> None:
    admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)  # audit 1 (provider), 2 (key)
    admin.ok("POST", "/provider_models", 201, json=SEED_MODEL)  # 3
    admin.ok("PATCH", "/providers/1", json={"weight": 4})  # 4
    entries = admin.ok("GET", "/audit")
    assert [e["id"] for e in entries] == [4, 3, 2, 1]
    assert set(entries[0]) == {
        "id", "created_at", "actor", "remote_addr", "action", "resource", "resource_id", "changes",
    }
    assert [e["id"] for e in admin.ok("GET", "/audit?resource=provider")] == [4, 1]
    assert [e["id"] for e in admin.ok("GET", "/audit?resource=key&resource_id=1")] == [2]
    assert admin.ok("GET", "/audit?resource=provider&resource_id=2") == []
    assert [e["id"] for e in admin.ok("GET", "/audit?limit=2&offset=1")] == [3, 2]
