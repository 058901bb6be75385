"""The seed's admin examples, as written, against `python run.py`; data survives restarts; secrets stay out of logs."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.support.nexus_process import NexusProcess, free_port
from tests.support.seed import SEED_CLIENT_KEY, SEED_MODEL, seed_provider

pytestmark = pytest.mark.db

SERVER_KEY = "sk-test-e2e-5e1fa77c0b9d"
CLIENT_KEY = SEED_CLIENT_KEY
SEED_PROVIDER = seed_provider(SERVER_KEY)


def _ok(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def _assert_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"message", "type", "code", "details"} <= set(error)


def _without_written_extras(written: dict[str, Any]) -> dict[str, Any]:
    """A POST answer minus what only the write answer carries (the issued key summary)."""
    return {k: v for k, v in written.items() if k != "personalized_key"}


def _assert_no_secret(text: str) -> None:
    assert SERVER_KEY not in text
    assert CLIENT_KEY not in text


def test_seed_provider_examples(nexus: NexusProcess) -> None:
    created = nexus.admin("POST", "/providers", json=SEED_PROVIDER)
    provider = _ok(created, 201)
    _assert_no_secret(created.text)
    assert provider["id"] == 1
    assert provider["name"] == "openai" and provider["server_url"] == "https://api.openai.com/v1"
    assert provider["description"] == "OpenAI official API"
    assert provider["server_key_hint"] and "server_key" not in provider

    listed = nexus.admin("GET", "/providers")
    _assert_no_secret(listed.text)
    assert [p["name"] for p in _ok(listed)] == ["openai"]
    assert _ok(nexus.admin("GET", "/providers/1"))["id"] == 1

    updated = _ok(nexus.admin("PUT", "/providers/1", json={"description": "Updated description"}))
    assert updated["description"] == "Updated description"
    assert _ok(nexus.admin("GET", "/providers/1"))["description"] == "Updated description"

    _ok(nexus.admin("DELETE", "/providers/1"))
    _assert_error(nexus.admin("GET", "/providers/1"), 404)
    assert _ok(nexus.admin("GET", "/providers")) == []


def test_seed_provider_model_and_stats_examples(nexus: NexusProcess) -> None:
    _ok(nexus.admin("POST", "/providers", json=SEED_PROVIDER), 201)

    model = _ok(nexus.admin("POST", "/provider_models", json=SEED_MODEL), 201)
    assert model["provider_id"] == 1 and model["model_name"] == "gpt-4"
    assert model["description"] == "GPT-4 model"
    model_id = model["id"]

    assert [m["model_name"] for m in _ok(nexus.admin("GET", "/providers/1/models"))] == ["gpt-4"]
    assert _ok(nexus.admin("GET", f"/provider_models/{model_id}"))["id"] == model_id
    updated = _ok(nexus.admin("PUT", f"/provider_models/{model_id}", json={"description": "Updated model"}))
    assert updated["description"] == "Updated model"

    _ok(nexus.admin("DELETE", f"/provider_models/{model_id}"))
    _assert_error(nexus.admin("GET", f"/provider_models/{model_id}"), 404)
    assert _ok(nexus.admin("GET", "/providers/1/models")) == []

    total = _ok(nexus.admin("GET", "/stats/total"))
    assert isinstance(total, dict) and total

    _assert_error(nexus.admin("GET", "/stats/conversation/no-such-conversation"), 404)


def test_seed_personalized_key_is_usable_at_the_proxy(nexus: NexusProcess) -> None:
    _ok(nexus.admin("POST", "/providers", json=SEED_PROVIDER), 201)
    _ok(nexus.admin("POST", "/provider_models", json=SEED_MODEL), 201)

    # The proxy picks admin changes up by polling the config version (bounded wait).
    deadline = time.monotonic() + 5
    while True:
        response = requests.get(
            nexus.proxy_url + "/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=5
        )
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    listing = _ok(response)
    assert [(m["id"], m["owned_by"]) for m in listing["data"]] == [("gpt-4", "openai")]


def test_restarting_run_py_keeps_all_data(nexus: NexusProcess) -> None:
    provider = _ok(nexus.admin("POST", "/providers", json=SEED_PROVIDER), 201)
    model = _ok(nexus.admin("POST", "/provider_models", json=SEED_MODEL), 201)
    key = _ok(nexus.admin("POST", "/keys", json={"name": "restart check"}), 201)
    keys_before = _ok(nexus.admin("GET", "/keys"))
    audit_before = _ok(nexus.admin("GET", "/audit"))

    assert nexus.stop() == 0
    nexus.start()

    assert _ok(nexus.admin("GET", f"/providers/{provider['id']}")) == _without_written_extras(provider)
    assert _ok(nexus.admin("GET", f"/provider_models/{model['id']}")) == model
    assert _ok(nexus.admin("GET", "/keys")) == keys_before
    assert any(k["id"] == key["id"] for k in keys_before)
    assert _ok(nexus.admin("GET", "/audit")) == audit_before



def test_no_log_or_output_contains_a_secret(nexus: NexusProcess) -> None:
    dead_upstream = f"http://127.0.0.1:{free_port()}/v1"
    _ok(nexus.admin("POST", "/providers", json={**SEED_PROVIDER, "server_url": dead_upstream}), 201)
    _ok(nexus.admin("POST", "/provider_models", json=SEED_MODEL), 201)
    _ok(nexus.admin("PUT", "/providers/1", json={"server_key": SERVER_KEY + "-rotated"}))
    # Bad requests whose error paths might echo what they were given.
    nexus.admin("POST", "/providers", json={**SEED_PROVIDER, "server_url": "not a url"})
    nexus.admin("POST", "/providers", json=SEED_PROVIDER)  # duplicate name and key
    requests.get(nexus.admin_url + "/providers", headers={"Authorization": "Bearer wrong-token"}, timeout=5)
    time.sleep(1.5)  # let the proxy see the new key
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    requests.get(nexus.proxy_url + "/v1/models", headers=auth, timeout=5)
    requests.get(nexus.proxy_url + f"/v1/models?api_key={CLIENT_KEY}", timeout=5)
    requests.post(
        nexus.proxy_url + "/v1/chat/completions",
        headers=auth,
        json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    requests.get(nexus.proxy_url + "/v1/models", headers={"Authorization": "Bearer nx-not-a-key"}, timeout=5)
    assert nexus.stop() == 0  # flush every buffer before reading the logs

    logs = sorted(nexus.log_dir.iterdir())
    assert {p.name for p in logs} >= {"admin.log", "proxy.log", "run.log"}
    for text, where in [(p.read_text(), p.name) for p in logs] + [
        (nexus.stdout, "stdout"),
        (nexus.stderr, "stderr"),
    ]:
        for secret in (SERVER_KEY, CLIENT_KEY, nexus.admin_token):
            assert secret and secret not in text, f"{where} contains a secret"
