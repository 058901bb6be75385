"""ADMIN_TOKEN: required everywhere but /health when set; the actor lands in the audit log."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.admin.conftest import ADMIN_TOKEN, SEED_PROVIDER, AdminClient, Dump, assert_error

pytestmark = pytest.mark.db

PROTECTED = [
    ("GET", "/providers"), ("POST", "/providers"), ("GET", "/providers/1"), ("PUT", "/providers/1"),
    ("DELETE", "/providers/1"), ("GET", "/providers/1/models"), ("POST", "/provider_models"),
    ("GET", "/provider_models/1"), ("GET", "/keys"), ("POST", "/keys"), ("POST", "/keys/1/rotate"),
    ("GET", "/audit"), ("GET", "/stats/total"), ("GET", "/stats/conversation/c1"), ("GET", "/openapi.json"),
    ("GET", "/no-such-path"),
]


def _raw(admin: AdminClient, method: str, path: str, headers: dict[str, str]) -> requests.Response:
    return requests.request(method, admin.base_url + path, headers=headers, json=SEED_PROVIDER, timeout=10)


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_admin_token"),
        ({"Authorization": "Bearer"}, "missing_admin_token"),
        ({"Authorization": "Basic " + ADMIN_TOKEN}, "missing_admin_token"),
        ({"Authorization": "Bearer wrong-token"}, "invalid_admin_token"),
        ({"Authorization": "Bearer " + ADMIN_TOKEN + "x"}, "invalid_admin_token"),
        ({"Authorization": "Bearer " + ADMIN_TOKEN[:-1]}, "invalid_admin_token"),
        ({"Authorization": "Bearer tökén"}, "invalid_admin_token"),
    ],
)
def test_missing_or_bad_token_is_401_everywhere(
    secured_admin: AdminClient, dump_db: Callable[[], Dump], headers: dict[str, str], code: str
) -> None:
    before = dump_db()
    for method, path in PROTECTED:
        # requests sends header values as latin-1: pass the UTF-8 bytes through unchanged.
        raw_headers = {k: v.encode().decode("latin-1") for k, v in headers.items()}
        response = _raw(secured_admin, method, path, raw_headers)
        error = assert_error(response, 401, code)
        assert error["type"] == "authentication_error"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert ADMIN_TOKEN not in response.text
    assert dump_db() == before


def test_good_token_works_and_is_the_actor(secured_admin: AdminClient) -> None:
    created = secured_admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    # The scheme is case-insensitive.
    lower = requests.get(
        secured_admin.base_url + "/providers", headers={"Authorization": f"bearer {ADMIN_TOKEN}"}, timeout=10
    )
    assert lower.status_code == 200 and lower.json()[0]["id"] == created["id"]
    audit = secured_admin.ok("GET", "/audit")
    assert {entry["actor"] for entry in audit} == {"admin-token"}
    assert {entry["remote_addr"] for entry in audit} == {"127.0.0.1"}


def test_health_is_open(secured_admin: AdminClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = requests.get(secured_admin.base_url + "/health", headers=headers, timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "ok"


def test_without_a_token_everything_is_open_and_anonymous(admin: AdminClient) -> None:
    admin.ok("POST", "/providers", 201, json=SEED_PROVIDER, headers={"Authorization": "Bearer anything"})
    assert [entry["actor"] for entry in admin.ok("GET", "/audit")] == ["anonymous", "anonymous"]
    log = (admin.settings.log_dir / "admin.log").read_text(encoding="utf-8")
    assert "ADMIN_TOKEN is not set" in log and "loopback" in log
