"""`/provider_models` and `/providers/<id>/models`: prices, defaults, conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin.conftest import SEED_MODEL, SEED_PROVIDER, AdminClient, assert_error

pytestmark = pytest.mark.db

MODEL_FIELDS = {
    "id", "provider_id", "provider_name", "model_name", "upstream_name", "description", "input_price",
    "output_price", "cached_input_price", "cache_write_price", "context_length", "enabled", "created_at", "updated_at",
}


@pytest.fixture
def provider(admin: AdminClient) -> dict[str, Any]:
    return admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)  # type: ignore[no-any-return]


def test_seed_create_and_defaults(admin: AdminClient, provider: dict[str, Any], dump_db: Any) -> None:
    model = admin.ok("POST", "/provider_models", 201, json=SEED_MODEL)

    assert set(model) == MODEL_FIELDS
    assert model["provider_id"] == provider["id"] and model["provider_name"] == "openai"
    assert model["model_name"] == "gpt-4" and model["description"] == "GPT-4 model"
    assert model["upstream_name"] == "gpt-4"  # defaults to model_name ...
    assert dump_db()["provider_model"][0][3] is None  # ... stored as NULL
    assert model["context_length"] is None and model["enabled"] is True
    # No prices given: gpt-4's built-in list prices (shared/price_list.py) fill them.
    assert (model["input_price"], model["output_price"], model["cached_input_price"]) == (30.0, 60.0, None)


def test_prices_accept_numbers_and_strings_and_come_back_as_numbers(
    admin: AdminClient, provider: dict[str, Any]
) -> None:
    body = {
        **SEED_MODEL,
        "upstream_name": "gpt-4-0613",
        "input_price": "2.5",
        "output_price": 10,
        "cached_input_price": 1.234567,
        "cache_write_price": 3.75,
        "context_length": 128000,
        "enabled": False,
    }
    model = admin.ok("POST", "/provider_models", 201, json=body)
    assert model["upstream_name"] == "gpt-4-0613"
    assert model["input_price"] == 2.5 and model["output_price"] == 10
    assert model["cached_input_price"] == 1.234567 and model["cache_write_price"] == 3.75
    prices = ("input_price", "output_price", "cached_input_price", "cache_write_price")
    assert all(isinstance(model[k], (int, float)) for k in prices)
    assert model["context_length"] == 128000 and model["enabled"] is False
    assert admin.ok("GET", f"/provider_models/{model['id']}") == model


def test_listing_per_provider_and_overall(admin: AdminClient, provider: dict[str, Any]) -> None:
    other = admin.ok("POST", "/providers", 201, json={"name": "other", "server_url": "https://o.test"})
    a = admin.ok("POST", "/provider_models", 201, json=SEED_MODEL)
    b = admin.ok("POST", "/provider_models", 201, json={**SEED_MODEL, "provider_id": other["id"]})
    c = admin.ok("POST", "/provider_models", 201, json={**SEED_MODEL, "model_name": "gpt-4o"})

    assert [m["id"] for m in admin.ok("GET", f"/providers/{provider['id']}/models")] == [a["id"], c["id"]]
    assert [m["id"] for m in admin.ok("GET", f"/providers/{other['id']}/models")] == [b["id"]]
    assert [m["id"] for m in admin.ok("GET", "/provider_models")] == [a["id"], b["id"], c["id"]]
    assert [m["id"] for m in admin.ok("GET", f"/provider_models?provider_id={other['id']}")] == [b["id"]]
    page = admin.ok("GET", f"/providers/{provider['id']}/models?limit=1&offset=1")
    assert [m["id"] for m in page] == [c["id"]]
    assert_error(admin.get(f"/providers/{provider['id']}/models?limit=zero"), 400, "invalid_parameter")


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_update_changes_only_given_fields(admin: AdminClient, provider: dict[str, Any], method: str) -> None:
    model = admin.ok("POST", "/provider_models", 201, json={**SEED_MODEL, "input_price": 3})
    updated = admin.ok(method, f"/provider_models/{model['id']}", json={"description": "Updated model"})
    assert updated["description"] == "Updated model" and updated["input_price"] == 3
    assert updated["model_name"] == "gpt-4" and updated["upstream_name"] == "gpt-4"

    path = f"/provider_models/{model['id']}"
    updated = admin.ok(method, path, json={"upstream_name": "gpt-4-turbo", "output_price": "0.000001"})
    assert updated["upstream_name"] == "gpt-4-turbo" and updated["output_price"] == 0.000001
    # null goes back to the default.
    updated = admin.ok(method, path, json={"upstream_name": None, "input_price": None})
    assert updated["upstream_name"] == "gpt-4" and updated["input_price"] is None


def test_unknown_provider_id_in_body_is_409_with_details(
    admin: AdminClient, provider: dict[str, Any], dump_db: Any
) -> None:
    before = dump_db()
    response = admin.post("/provider_models", json={**SEED_MODEL, "provider_id": 99})
    error = assert_error(response, 409, "unknown_provider")
    assert error["details"] == {"provider_id": ["Provider 99 does not exist."]}
    model_id = admin.ok("POST", "/provider_models", 201, json=SEED_MODEL)["id"]
    middle = dump_db()
    assert_error(admin.patch(f"/provider_models/{model_id}", json={"provider_id": 99}), 409, "unknown_provider")
    assert dump_db() == middle
    assert before["provider_model"] == []


def test_duplicate_pair_is_409(admin: AdminClient, provider: dict[str, Any], dump_db: Any) -> None:
    admin.ok("POST", "/provider_models", 201, json=SEED_MODEL)
    other = admin.ok("POST", "/provider_models", 201, json={**SEED_MODEL, "model_name": "gpt-4o"})
    before = dump_db()
    error = assert_error(admin.post("/provider_models", json=SEED_MODEL), 409, "duplicate_model_name")
    assert error["type"] == "conflict_error"
    assert_error(admin.put(f"/provider_models/{other['id']}", json={"model_name": " gpt-4 "}), 409)
    assert dump_db() == before
    # The same model name on another provider is fine.
    second = admin.ok("POST", "/providers", 201, json={"name": "second", "server_url": "https://s.test"})
    admin.ok("POST", "/provider_models", 201, json={**SEED_MODEL, "provider_id": second["id"]})


def test_delete(admin: AdminClient, provider: dict[str, Any]) -> None:
    model = admin.ok("POST", "/provider_models", 201, json=SEED_MODEL)
    assert admin.ok("DELETE", f"/provider_models/{model['id']}") == {"id": model["id"], "deleted": True}
    assert_error(admin.get(f"/provider_models/{model['id']}"), 404, "not_found")
    assert_error(admin.delete(f"/provider_models/{model['id']}"), 404)
    assert admin.ok("GET", f"/providers/{provider['id']}/models") == []
