"""`/providers`: seed bodies, partial updates, conflicts and the delete cascade."""

from __future__ import annotations

from typing import Any

import pytest

from shared.secrets import hash_key
from tests.admin.conftest import CLIENT_KEY, SEED_MODEL, SEED_PROVIDER, AdminClient, Dump, assert_error

pytestmark = pytest.mark.db

PROVIDER_FIELDS = {
    "id", "name", "server_url", "server_key_hint", "description", "enabled", "http_proxy",
    "timeout_s", "priority", "weight", "created_at", "updated_at", "kind", "apis", "connect_timeout_s", "api_version",
}


def _timestamp_is_utc(value: str) -> bool:
    return value.endswith("Z") or value.endswith("+00:00")


def test_seed_create_returns_the_provider_and_a_key_summary(admin: AdminClient, dump_db: Any) -> None:
    created = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)

    assert set(created) == PROVIDER_FIELDS | {"personalized_key"}
    assert created["name"] == "openai" and created["server_url"] == "https://api.openai.com/v1"
    assert created["description"] == "OpenAI official API"
    assert created["server_key_hint"] == "…4e5f"
    assert created["enabled"] is True and created["http_proxy"] is None
    assert created["timeout_s"] == 60.0 and created["priority"] == 0 and created["weight"] == 1
    assert _timestamp_is_utc(created["created_at"]) and _timestamp_is_utc(created["updated_at"])
    summary = created["personalized_key"]
    assert set(summary) == {"id", "name", "key_hint"}
    assert summary["name"] == "openai key" and summary["key_hint"] == "…123"

    key = admin.ok("GET", f"/keys/{summary['id']}")
    assert key["provider_ids"] == [created["id"]] and key["models"] == [] and key["enabled"] is True
    rows = dump_db()["api_key"]
    assert len(rows) == 1 and hash_key(CLIENT_KEY) in rows[0]


def test_get_and_list(admin: AdminClient) -> None:
    created = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    local = {"name": "local", "server_url": "http://127.0.0.1:11434/v1"}
    second = admin.ok("POST", "/providers", 201, json=local)

    fetched = admin.ok("GET", f"/providers/{created['id']}")
    assert fetched == {k: v for k, v in created.items() if k != "personalized_key"}
    assert [p["id"] for p in admin.ok("GET", "/providers")] == [created["id"], second["id"]]
    assert second["server_key_hint"] == "" and second["description"] == ""


def test_all_optional_fields_are_stored(admin: AdminClient) -> None:
    body = {
        "name": "grok",
        "server_url": "https://api.x.ai/v1",
        "server_key": "xai-0123456789abcdef",
        "enabled": False,
        "http_proxy": "socks5://user:proxy-pass@10.0.0.1:1080",
        "timeout_s": 12.5,
        "priority": 5,
        "weight": 3,
    }
    created = admin.ok("POST", "/providers", 201, json=body)
    assert created["enabled"] is False and created["timeout_s"] == 12.5
    assert created["priority"] == 5 and created["weight"] == 3
    # The proxy password is a secret too: shown masked.
    assert created["http_proxy"] == "socks5://user:***@10.0.0.1:1080"
    assert "personalized_key" not in created


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_update_changes_only_given_fields(admin: AdminClient, method: str) -> None:
    created = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    updated = admin.ok(method, f"/providers/{created['id']}", json={"description": "Updated description"})

    assert updated["description"] == "Updated description"
    moving = {"description", "updated_at", "personalized_key"}
    unchanged = {k: v for k, v in created.items() if k not in moving}
    assert {k: updated[k] for k in unchanged} == unchanged
    assert admin.ok("GET", f"/providers/{created['id']}")["description"] == "Updated description"

    body = {"server_key": "sk-new-key-99999999zzzz", "weight": 7}
    updated = admin.ok(method, f"/providers/{created['id']}", json=body)
    assert updated["server_key_hint"] == "…zzzz" and updated["weight"] == 7
    assert updated["description"] == "Updated description"


def test_update_with_the_same_personalized_key_is_idempotent(admin: AdminClient, dump_db: Any) -> None:
    created = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    updated = admin.ok("PUT", f"/providers/{created['id']}", json=SEED_PROVIDER)
    assert updated["personalized_key"] == created["personalized_key"]
    assert len(dump_db()["api_key"]) == 1


def test_update_with_a_new_personalized_key_adds_a_scoped_key(admin: AdminClient) -> None:
    created = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    updated = admin.ok("PATCH", f"/providers/{created['id']}", json={"personalized_key": "second-key-456"})
    assert updated["personalized_key"]["id"] != created["personalized_key"]["id"]
    assert [k["provider_ids"] for k in admin.ok("GET", "/keys")] == [[created["id"]], [created["id"]]]


def test_duplicate_name_is_409_and_creates_nothing(admin: AdminClient, dump_db: Any) -> None:
    admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    before = dump_db()
    response = admin.post("/providers", json={**SEED_PROVIDER, "personalized_key": "other-key-1"})
    error = assert_error(response, 409, "duplicate_provider_name")
    assert error["type"] == "conflict_error"
    # Names are trimmed, so a padded copy is the same name.
    assert_error(admin.post("/providers", json={"name": "  openai ", "server_url": "https://x.test"}), 409)
    assert dump_db() == before


def test_renaming_onto_another_name_is_409(admin: AdminClient, dump_db: Any) -> None:
    admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    other = admin.ok("POST", "/providers", 201, json={"name": "other", "server_url": "https://o.test"})
    before = dump_db()
    assert_error(admin.put(f"/providers/{other['id']}", json={"name": "openai", "weight": 9}), 409)
    assert dump_db() == before
    # Keeping one's own name is not a conflict.
    assert admin.ok("PUT", f"/providers/{other['id']}", json={"name": "other"})["name"] == "other"


def test_existing_personalized_key_is_409_and_creates_nothing(admin: AdminClient, dump_db: Any) -> None:
    admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    before = dump_db()
    response = admin.post("/providers", json={**SEED_PROVIDER, "name": "second"})
    assert_error(response, 409, "duplicate_key")
    assert dump_db() == before


def test_concurrent_duplicate_creates_give_one_201_and_409s(admin: AdminClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import requests

    def create(i: int) -> int:
        body = {"name": "race", "server_url": "https://race.test", "personalized_key": f"race-key-{i:04d}"}
        return requests.post(admin.base_url + "/providers", json=body, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(create, range(6)))
    assert statuses == [201] + [409] * 5
    assert len(admin.ok("GET", "/providers")) == 1
    assert len(admin.ok("GET", "/keys")) == 1


def test_delete_cascades_models_and_descopes_keys(admin: AdminClient, dump_db: Any) -> None:
    gone = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    kept = admin.ok("POST", "/providers", 201, json={"name": "kept", "server_url": "https://k.test"})
    admin.ok("POST", "/provider_models", 201, json=SEED_MODEL)
    admin.ok("POST", "/provider_models", 201, json={**SEED_MODEL, "model_name": "gpt-4o"})
    kept_model = admin.ok("POST", "/provider_models", 201, json={**SEED_MODEL, "provider_id": kept["id"]})
    only_gone = gone["personalized_key"]["id"]  # scope [gone] -> would widen: disabled
    both_scope = {"name": "both", "provider_ids": [gone["id"], kept["id"]]}
    both = admin.ok("POST", "/keys", 201, json=both_scope)["id"]
    scoped = {"name": "m", "provider_ids": [gone["id"]], "models": ["gpt-4"]}
    with_models = admin.ok("POST", "/keys", 201, json=scoped)["id"]
    unscoped = admin.ok("POST", "/keys", 201, json={"name": "all"})["id"]

    result = admin.ok("DELETE", f"/providers/{gone['id']}")

    assert result == {
        "id": gone["id"],
        "deleted": True,
        "models_deleted": 2,
        "keys_descoped": [only_gone, both, with_models],
        "keys_disabled": [only_gone, with_models],
    }
    assert_error(admin.get(f"/providers/{gone['id']}"), 404)
    assert [m["id"] for m in admin.ok("GET", "/provider_models")] == [kept_model["id"]]
    assert len(dump_db()["provider_model"]) == 1
    keys = {k["id"]: k for k in admin.ok("GET", "/keys")}
    assert keys[only_gone]["provider_ids"] == [] and keys[only_gone]["enabled"] is False
    assert keys[both]["provider_ids"] == [kept["id"]] and keys[both]["enabled"] is True
    # [] would mean "gpt-4 on every provider": wider than before, so this key is disabled too.
    assert keys[with_models]["provider_ids"] == [] and keys[with_models]["enabled"] is False
    assert keys[unscoped]["provider_ids"] == [] and keys[unscoped]["enabled"] is True

    audit = admin.ok("GET", "/audit?resource=provider&resource_id=%d" % gone["id"])
    assert audit[0]["action"] == "delete" and audit[0]["changes"]["keys_disabled"] == [only_gone, with_models]
    key_audit = admin.ok("GET", f"/audit?resource=key&resource_id={only_gone}")
    assert key_audit[0]["action"] == "update" and key_audit[0]["changes"]["enabled"] is False


def test_a_deleted_providers_and_models_ids_are_never_handed_out_again(admin: AdminClient) -> None:
    first = admin.ok("POST", "/providers", 201, json={"name": "first", "server_url": "https://f.test"})
    model = admin.ok("POST", "/provider_models", 201, json={**SEED_MODEL, "provider_id": first["id"]})
    admin.ok("DELETE", f"/provider_models/{model['id']}")
    admin.ok("DELETE", f"/providers/{first['id']}")  # the newest row: SQLite would reuse its id

    second = admin.ok("POST", "/providers", 201, json={"name": "second", "server_url": "https://s.test"})
    second_model = admin.ok("POST", "/provider_models", 201, json={**SEED_MODEL, "provider_id": second["id"]})

    assert second["id"] > first["id"] and second_model["id"] > model["id"]
    # So the first provider's history stays its own.
    audit = admin.ok("GET", "/audit?resource=provider&resource_id=%d" % second["id"])
    assert [a["action"] for a in audit] == ["create"]


def test_unknown_provider_is_404(admin: AdminClient, dump_db: Any) -> None:
    before: Dump = dump_db()
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        kwargs = {"json": {"description": "x"}} if method in {"PUT", "PATCH"} else {}
        error = assert_error(admin.request(method, "/providers/999", **kwargs), 404, "not_found")
        assert error["type"] == "not_found_error"
    assert_error(admin.get("/providers/999/models"), 404)
    assert dump_db() == before


def test_pagination(admin: AdminClient) -> None:
    for i in range(5):
        admin.ok("POST", "/providers", 201, json={"name": f"p{i}", "server_url": "https://p.test"})
    assert [p["name"] for p in admin.ok("GET", "/providers?limit=2")] == ["p0", "p1"]
    assert [p["name"] for p in admin.ok("GET", "/providers?limit=2&offset=3")] == ["p3", "p4"]
    assert admin.ok("GET", "/providers?offset=10") == []
    for query in ("limit=0", "limit=-1", "limit=abc", "offset=-1", "offset=x", "limit=100000"):
        error = assert_error(admin.get(f"/providers?{query}"), 400, "invalid_parameter")
        assert error["details"]


def test_sending_back_the_masked_proxy_url_keeps_the_password(admin: AdminClient) -> None:
    from sqlalchemy import select

    from shared.db import make_engine
    from shared.models import Provider

    def stored(provider_id: int) -> tuple[str | None, str]:
        engine = make_engine(admin.settings.database_url)
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    select(Provider.http_proxy, Provider.description).where(Provider.id == provider_id)
                ).one()
                return row[0], row[1]
        finally:
            engine.dispose()

    created = admin.ok("POST", "/providers", 201, json={
        "name": "proxied", "server_url": "https://p.test/v1", "http_proxy": "http://user:pa55word@proxy.test:3128",
    })
    assert created["http_proxy"] == "http://user:***@proxy.test:3128"
    # A client that edits one field and PUTs back what it read must not turn the password into "***".
    admin.ok("PUT", f"/providers/{created['id']}", json={"http_proxy": created["http_proxy"], "description": "e"})
    assert stored(created["id"]) == ("http://user:pa55word@proxy.test:3128", "e")
    admin.ok("PATCH", f"/providers/{created['id']}", json={"http_proxy": "http://user:***@other.test:3128"})
    assert stored(created["id"])[0] == "http://user:***@other.test:3128"  # a different URL is taken as given


def test_kind_apis_and_connect_timeout(admin: AdminClient, dump_db: Any) -> None:
    created = admin.ok("POST", "/providers", 201, json={"name": "local", "server_url": "http://127.0.0.1:8080/v1"})
    # Not said: the openai kind, its default APIs, a connect timeout of a few seconds.
    assert created["kind"] == "openai" and created["connect_timeout_s"] == 5.0
    assert created["apis"] == ["chat", "responses", "embeddings", "completions"]
    pid = created["id"]
    changed = admin.ok("PATCH", f"/providers/{pid}", json={"apis": ["embeddings", "chat"], "connect_timeout_s": 2.5})
    assert changed["apis"] == ["chat", "embeddings"] and changed["connect_timeout_s"] == 2.5
    assert admin.ok("PATCH", f"/providers/{pid}", json={"apis": None})["apis"][0] == "chat"  # back to defaults
    before = dump_db()
    for body, field in [
        ({"kind": "gopher"}, "kind"),
        ({"apis": ["chat", "telepathy"]}, "apis"),
        ({"apis": []}, "apis"),
        ({"apis": ["chat", "chat"]}, "apis"),
        ({"apis": "chat"}, "apis"),
        ({"connect_timeout_s": 0}, "connect_timeout_s"),
        ({"connect_timeout_s": "5"}, "connect_timeout_s"),
    ]:
        r = admin.request("PATCH", f"/providers/{pid}", json=body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.text
    assert dump_db() == before  # refused bodies change nothing


def test_gemini_and_azure_kinds_and_api_version(admin: AdminClient, dump_db: Any) -> None:
    gemini = admin.ok("POST", "/providers", 201, json={
        "name": "google", "server_url": "https://generativelanguage.googleapis.com", "kind": "gemini",
        "server_key": "AIza-secret-key-1234", "apis": ["chat"]})
    # Gemini speaks no client API itself: everything reaches it translated, whatever `apis` says.
    assert gemini["kind"] == "gemini" and gemini["apis"] == [] and gemini["api_version"] is None
    azure = admin.ok("POST", "/providers", 201, json={
        "name": "azure", "server_url": "https://contoso.openai.azure.com", "kind": "azure",
        "api_version": "2024-10-21"})
    assert azure["apis"] == ["chat", "responses", "embeddings", "completions"]
    assert azure["api_version"] == "2024-10-21"
    assert admin.ok("PATCH", f"/providers/{azure['id']}", json={"api_version": " "})["api_version"] is None
    assert admin.ok("PATCH", f"/providers/{azure['id']}", json={"api_version": "preview"})["api_version"] == "preview"
    before = dump_db()
    for bad in ("2024 10 21", "2024-10-21&x=1", "-v1", "x" * 41, 20241021):
        r = admin.request("PATCH", f"/providers/{azure['id']}", json={"api_version": bad})
        assert r.status_code == 400 and "api_version" in r.text, (bad, r.text)
    assert dump_db() == before
