"""`/keys`: generated vs supplied values, scope, limits, rotation; only hashes are stored."""

from __future__ import annotations

from typing import Any

import pytest

from shared.secrets import hash_key
from tests.admin.conftest import SEED_PROVIDER, AdminClient, assert_error

pytestmark = pytest.mark.db

KEY_FIELDS = {
    "id", "name", "key_hint", "provider_ids", "models", "rpm", "tpm", "max_concurrency", "token_quota",
    "budget_usd", "quota_period", "expires_at", "enabled", "archive_messages", "created_at", "updated_at",
    "last_used_at",
}


def _hashes(dump: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    return [row[2] for row in dump["api_key"]]


def test_generated_key_is_shown_once(admin: AdminClient, dump_db: Any) -> None:
    created = admin.ok("POST", "/keys", 201, json={"name": "ci bot"})

    assert set(created) == KEY_FIELDS | {"key"}
    value = created["key"]
    assert value.startswith("nx-") and len(value) > 40
    assert created["key_hint"] == f"…{value[-4:]}"
    assert created["provider_ids"] == [] and created["models"] == [] and created["quota_period"] == "total"
    assert created["enabled"] is True and created["archive_messages"] is None
    assert _hashes(dump_db()) == [hash_key(value)]

    fetched = admin.ok("GET", f"/keys/{created['id']}")
    consumption = {"used_tokens": 0, "used_usd": 0.0, "period_resets_at": None}
    assert "key" not in fetched and fetched == {**{k: v for k, v in created.items() if k != "key"}, **consumption}
    assert value not in admin.get("/keys").text
    assert value not in admin.get("/audit").text


def test_supplied_key_is_never_echoed(admin: AdminClient, dump_db: Any) -> None:
    response = admin.post("/keys", json={"name": "mine", "key": "caller-chosen-key-1"})
    assert response.status_code == 201
    assert "caller-chosen-key-1" not in response.text and "key" not in response.json()
    assert _hashes(dump_db()) == [hash_key("caller-chosen-key-1")]


def test_all_fields(admin: AdminClient) -> None:
    provider = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    body = {
        "name": "full",
        "provider_ids": [provider["id"], provider["id"]],
        "models": ["gpt-4", "gpt-4o", "gpt-4"],
        "rpm": 60,
        "tpm": 100000,
        "max_concurrency": 4,
        "token_quota": 5_000_000_000,
        "budget_usd": "12.345678",
        "quota_period": "monthly",
        "expires_at": "2030-01-02T03:04:05",
        "enabled": False,
        "archive_messages": True,
    }
    key = admin.ok("POST", "/keys", 201, json=body)
    assert key["provider_ids"] == [provider["id"]] and key["models"] == ["gpt-4", "gpt-4o"]
    assert (key["rpm"], key["tpm"], key["max_concurrency"]) == (60, 100000, 4)
    assert key["token_quota"] == 5_000_000_000 and key["budget_usd"] == 12.345678
    assert key["quota_period"] == "monthly" and key["enabled"] is False and key["archive_messages"] is True
    # A naive expiry is UTC; an offset is converted to UTC.
    assert key["expires_at"] in {"2030-01-02T03:04:05+00:00", "2030-01-02T03:04:05Z"}
    key = admin.ok("PATCH", f"/keys/{key['id']}", json={"expires_at": "2030-01-02T05:04:05+02:00"})
    assert key["expires_at"] in {"2030-01-02T03:04:05+00:00", "2030-01-02T03:04:05Z"}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_update_changes_only_given_fields(admin: AdminClient, method: str) -> None:
    key = admin.ok("POST", "/keys", 201, json={"name": "k", "rpm": 10, "models": ["a"]})
    key.pop("key")
    updated = admin.ok(method, f"/keys/{key['id']}", json={"tpm": 500, "rpm": None})
    assert updated["tpm"] == 500 and updated["rpm"] is None and updated["models"] == ["a"]
    assert {k: updated[k] for k in key if k not in {"tpm", "rpm", "updated_at"}} == {
        k: key[k] for k in key if k not in {"tpm", "rpm", "updated_at"}
    }


def test_duplicate_value_is_409(admin: AdminClient, dump_db: Any) -> None:
    admin.ok("POST", "/keys", 201, json={"name": "a", "key": "same-value-123"})
    before = dump_db()
    assert_error(admin.post("/keys", json={"name": "b", "key": "same-value-123"}), 409, "duplicate_key")
    assert dump_db() == before


def test_unknown_provider_ids_are_409(admin: AdminClient, dump_db: Any) -> None:
    # The body is valid by the schema; what it names is missing from the current state.
    provider = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    before = dump_db()
    error = assert_error(
        admin.post("/keys", json={"name": "x", "provider_ids": [provider["id"], 77]}), 409, "unknown_provider"
    )
    assert error["details"] == {"provider_ids": ["Provider 77 does not exist."]}
    key_id = before["api_key"][0][0]
    assert_error(admin.put(f"/keys/{key_id}", json={"provider_ids": [78]}), 409, "unknown_provider")
    assert dump_db() == before


def test_key_value_cannot_change_through_update(admin: AdminClient, dump_db: Any) -> None:
    key = admin.ok("POST", "/keys", 201, json={"name": "k"})
    before = dump_db()
    error = assert_error(admin.patch(f"/keys/{key['id']}", json={"key": "new-value-123"}), 400)
    assert "key" in error["details"]
    assert dump_db() == before


def test_rotate_replaces_the_hash(admin: AdminClient, dump_db: Any) -> None:
    created = admin.ok("POST", "/keys", 201, json={"name": "k", "rpm": 5})
    old = created["key"]

    rotated = admin.ok("POST", f"/keys/{created['id']}/rotate")
    new = rotated["key"]
    assert new != old and rotated["key_hint"] == f"…{new[-4:]}" and rotated["rpm"] == 5
    assert _hashes(dump_db()) == [hash_key(new)]

    supplied = admin.post(f"/keys/{created['id']}/rotate", json={"key": "my-rotated-key-1"})
    assert supplied.status_code == 200 and "key" not in supplied.json()
    assert "my-rotated-key-1" not in supplied.text
    assert _hashes(dump_db()) == [hash_key("my-rotated-key-1")]

    other = admin.ok("POST", "/keys", 201, json={"name": "other"})
    before = dump_db()
    assert_error(admin.post(f"/keys/{other['id']}/rotate", json={"key": "my-rotated-key-1"}), 409)
    assert_error(admin.post(f"/keys/{other['id']}/rotate", json={"nope": 1}), 400)
    assert_error(admin.post("/keys/999/rotate"), 404)
    assert dump_db() == before
    audit = admin.ok("GET", f"/audit?resource=key&resource_id={created['id']}")
    assert [a["action"] for a in audit] == ["rotate", "rotate", "create"]


def test_delete(admin: AdminClient) -> None:
    key = admin.ok("POST", "/keys", 201, json={"name": "k"})
    assert admin.ok("DELETE", f"/keys/{key['id']}") == {"id": key["id"], "deleted": True}
    assert_error(admin.get(f"/keys/{key['id']}"), 404)
    assert admin.ok("GET", "/keys") == []


def test_pagination(admin: AdminClient) -> None:
    ids = [admin.ok("POST", "/keys", 201, json={"name": f"k{i}"})["id"] for i in range(4)]
    assert [k["id"] for k in admin.ok("GET", "/keys?limit=3")] == ids[:3]
    assert [k["id"] for k in admin.ok("GET", "/keys?offset=3")] == ids[3:]
    assert_error(admin.get("/keys?limit=1.5"), 400, "invalid_parameter")
