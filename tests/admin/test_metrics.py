"""The admin's `GET /metrics`, parsed with prometheus_client's parser."""

from __future__ import annotations

from collections.abc import Callable

import requests

from shared.settings import Settings
from tests.admin.conftest import ADMIN_TOKEN, AdminClient
from tests.support.prometheus_text import samples


def test_requests_by_route_and_status(admin: AdminClient) -> None:
    for _ in range(3):
        admin.ok("GET", "/providers")
    assert admin.get("/providers/12345").status_code == 404
    assert admin.get("/no/such/path").status_code == 404
    r = admin.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=")
    got = samples(r.text)
    assert got[("nexusai_admin_requests_total", (("method", "GET"), ("route", "/providers"), ("status", "200")))] == 3
    assert got[("nexusai_admin_requests_total", (("method", "GET"), ("route", "/providers/<int:provider_id>"),
                                                 ("status", "404")))] == 1
    assert got[("nexusai_admin_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert got[("nexusai_admin_request_duration_seconds_count", (("method", "GET"), ("route", "/providers")))] == 3


def test_metrics_need_the_admin_token_when_one_is_set(secured_admin: AdminClient) -> None:
    assert requests.get(secured_admin.base_url + "/metrics", timeout=5).status_code == 401
    assert "nexusai_admin_requests_total" in secured_admin.get("/metrics").text


def test_metrics_off(start_admin: Callable[..., AdminClient], settings: Settings) -> None:
    admin = start_admin(settings.with_overrides(metrics_enabled=False))
    r = admin.get("/metrics")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert ADMIN_TOKEN not in r.text
