"""Secrets are write-only: never in a response, a log line or an audit row; keys only as SHA-256."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.admin.conftest import (
    ADMIN_TOKEN,
    CLIENT_KEY,
    SEED_MODEL,
    SEED_PROVIDER,
    SERVER_KEY,
    AdminClient,
    Dump,
)

pytestmark = pytest.mark.db

PROXY_PASSWORD = "pr0xy-pa55word-c4f1"
SECOND_SERVER_KEY = "sk-second-secret-9a8b7c6d5e4f"
SUPPLIED_KEY = "caller-key-e07d4b1a"
ROTATED_KEY = "rotated-key-b5c2e8f3"


def _exercise(admin: AdminClient) -> str:
    """Touch every endpoint, good and bad paths; return the one generated key."""
    provider = admin.ok("POST", "/providers", 201, json={
        **SEED_PROVIDER, "http_proxy": f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:3128",
    })
    pid = provider["id"]
    admin.ok("POST", "/provider_models", 201, json=SEED_MODEL)
    same_key = {"server_key": SECOND_SERVER_KEY, "personalized_key": CLIENT_KEY}
    admin.ok("PUT", f"/providers/{pid}", json=same_key)
    admin.ok("PATCH", f"/providers/{pid}", json={"http_proxy": f"socks5://u:{PROXY_PASSWORD}@10.1.1.1:1080"})
    generated = admin.ok("POST", "/keys", 201, json={"name": "gen"})
    supplied = admin.ok("POST", "/keys", 201, json={"name": "sup", "key": SUPPLIED_KEY})
    admin.ok("POST", f"/keys/{supplied['id']}/rotate", json={"key": ROTATED_KEY})
    # Error paths that might echo what they were given.
    admin.post("/providers", json={**SEED_PROVIDER, "server_url": "not a url"})
    admin.post("/providers", json=SEED_PROVIDER)
    admin.post("/providers", json={**SEED_PROVIDER, "name": "x", "server_key": 5})
    admin.post("/keys", json={"name": "dup", "key": ROTATED_KEY})
    admin.post("/keys", json={"name": "", "key": SUPPLIED_KEY + " x"})
    truncated = f'{{"server_key": "{SERVER_KEY}"'
    admin.post("/providers", data=truncated, headers={"Content-Type": "application/json"})
    admin.get(f"/keys?limit={CLIENT_KEY}")
    for path in ("/providers", f"/providers/{pid}", "/provider_models", "/keys", "/audit", "/stats/total",
                 "/openapi.json", "/health", "/providers/999"):
        admin.get(path)
    return str(generated["key"])


def _assert_clean(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into {where}"


def test_no_secret_in_responses_logs_or_audit(
    secured_admin: AdminClient, dump_db: Callable[[], Dump]
) -> None:
    generated = _exercise(secured_admin)
    wrong = {"Authorization": "Bearer wrong-" + ADMIN_TOKEN}
    requests.get(secured_admin.base_url + "/keys", headers=wrong, timeout=10)
    secrets = [
        SERVER_KEY, SECOND_SERVER_KEY, CLIENT_KEY, SUPPLIED_KEY, ROTATED_KEY, ADMIN_TOKEN, PROXY_PASSWORD,
    ]

    # The one allowed exception: the create response of a generated key.
    shown = [body for body in secured_admin.bodies if generated in body]
    assert len(shown) == 1 and '"key"' in shown[0]
    for i, body in enumerate(secured_admin.bodies):
        _assert_clean(body, secrets, f"response #{i}")

    logs = "".join(p.read_text(encoding="utf-8") for p in secured_admin.settings.log_dir.glob("*.log*"))
    assert "[nexusai.admin.access]" in logs
    _assert_clean(logs, secrets + [generated], "the log files")

    dump = dump_db()
    _assert_clean(repr(dump["audit_log"]), secrets + [generated], "the audit log")
    # Client keys are stored only as SHA-256 (the server key must be stored to reach the upstream).
    _assert_clean(repr(dump), [CLIENT_KEY, SUPPLIED_KEY, ROTATED_KEY, generated, ADMIN_TOKEN], "the database")


def test_audit_rows_name_secret_fields_as_redacted(admin: AdminClient) -> None:
    pid = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)["id"]
    admin.ok("PATCH", f"/providers/{pid}", json={"server_key": SECOND_SERVER_KEY, "description": "d2"})
    entries = admin.ok("GET", "/audit?resource=provider")
    assert entries[0]["changes"] == {"server_key": "[redacted]", "description": "d2"}
    assert entries[1]["changes"]["server_key"] == "[redacted]"
    key_entry: dict[str, Any] = admin.ok("GET", "/audit?resource=key")[0]
    assert key_entry["changes"]["key"] == "[redacted]"


def test_access_log_has_one_line_per_request_without_query_or_headers(admin: AdminClient) -> None:
    admin.ok("GET", "/providers?limit=5&offset=0")
    admin.post("/providers", json={"name": ""})
    admin.get("/missing")
    lines = [
        line for line in (admin.settings.log_dir / "admin.log").read_text(encoding="utf-8").splitlines()
        if "[nexusai.admin.access]" in line
    ]
    assert len(lines) == 3
    assert lines[0].endswith("GET /providers 200 " + lines[0].split(" 200 ")[1])
    assert "limit" not in lines[0] and lines[0].rstrip().endswith("127.0.0.1")
    assert " POST /providers 400 " in lines[1] and "ms 127.0.0.1" in lines[1]
    assert " GET /missing 404 " in lines[2]
