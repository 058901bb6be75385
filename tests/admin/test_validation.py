"""Every class of bad input: 400 in the error shape, field details, and an unchanged database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.admin.conftest import SEED_MODEL, SEED_PROVIDER, AdminClient, Dump, assert_error

pytestmark = pytest.mark.db

Case = tuple[str, str, dict[str, Any], str | None]  # method, path, requests kwargs, field in details

PROVIDER = {"name": "p2", "server_url": "https://p2.test"}
MODEL = {"provider_id": 1, "model_name": "m2"}
KEY = {"name": "k2"}


@pytest.fixture
def seeded(admin: AdminClient, dump_db: Callable[[], Dump]) -> AdminClient:
    """Provider 1 (with key 1), model 1 and key 2 exist."""
    admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    admin.ok("POST", "/provider_models", 201, json=SEED_MODEL)
    admin.ok("POST", "/keys", 201, json={"name": "k"})
    return admin


def _field_cases(
    field_values: dict[str, list[Any]], base: dict[str, Any], create: str, update: str
) -> list[Case]:
    cases: list[Case] = []
    for field, values in field_values.items():
        for value in values:
            cases.append(("POST", create, {"json": {**base, field: value}}, field))
            cases.append(("PATCH", update, {"json": {field: value}}, field))
    return cases


def _assert_all_rejected(
    admin: AdminClient, dump_db: Callable[[], Dump], cases: list[Case], code: str
) -> None:
    before = dump_db()
    for method, path, kwargs, field in cases:
        response = admin.request(method, path, **kwargs)
        label = f"{method} {path} {kwargs}"
        assert response.status_code == 400, f"{label}: {response.status_code} {response.text}"
        error = assert_error(response, 400, code)
        assert error["type"] == "invalid_request_error", label
        if field is not None:
            assert field in error["details"], f"{label}: {error}"
    assert dump_db() == before


def test_unknown_fields(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    cases: list[Case] = [
        ("POST", "/providers", {"json": {**PROVIDER, "api_key": "x"}}, "api_key"),
        ("PUT", "/providers/1", {"json": {"server_keys": "x"}}, "server_keys"),
        ("POST", "/provider_models", {"json": {**MODEL, "price": 1}}, "price"),
        ("PATCH", "/provider_models/1", {"json": {"id": 5}}, "id"),
        ("POST", "/keys", {"json": {**KEY, "key_hash": "0" * 64}}, "key_hash"),
        ("PUT", "/keys/2", {"json": {"key_hint": "x"}}, "key_hint"),
        ("POST", "/keys/2/rotate", {"json": {"name": "x"}}, "name"),
    ]
    _assert_all_rejected(seeded, dump_db, cases, "validation_error")


def test_wrong_types(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    cases = _field_cases(
        {
            "name": [123, ["a"], None],
            "server_url": [42, None],
            "server_key": [1234],
            "description": [5],
            "enabled": ["yes", 1, None],
            "timeout_s": ["10", True],
            "priority": ["5", 1.5, True],
            "weight": [2.5, "3"],
            "http_proxy": [8080],
        },
        PROVIDER, "/providers", "/providers/1",
    )
    cases += _field_cases(
        {
            "provider_id": ["1", 1.0, True, None],
            "model_name": [7, None],
            "input_price": ["abc", True, [1], "NaN", "Infinity"],
            "context_length": [1.5, "4096"],
            "enabled": [0],
        },
        MODEL, "/provider_models", "/provider_models/1",
    )
    cases += _field_cases(
        {
            "provider_ids": ["1", 1, [True], [1.5], ["1"]],
            "models": ["gpt-4", [1], [""]],
            "rpm": ["60", 2.5, False],
            "budget_usd": ["ten", False],
            "quota_period": ["weekly", 1],
            "expires_at": ["tomorrow", "2030-13-01", 20300101],
            "archive_messages": ["no"],
        },
        KEY, "/keys", "/keys/2",
    )
    cases.append(("POST", "/keys", {"json": {**KEY, "key": 12345678}}, "key"))
    cases.append(("POST", "/keys/2/rotate", {"json": {"key": ["x"]}}, "key"))
    _assert_all_rejected(seeded, dump_db, cases, "validation_error")


def test_bad_urls(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    cases = _field_cases(
        {
            "server_url": [
                "ftp://files.test/v1", "not a url", "https://", "api.openai.com/v1", "javascript:alert(1)",
                "http://user:secret@host.test/v1", "http://host.test:99999/", "https://bad host.test/", "",
                "https://" + "a" * 600 + ".test",
            ],
            "http_proxy": ["ftp://proxy.test:21", "proxy.test:8080", "http://"],
        },
        PROVIDER, "/providers", "/providers/1",
    )
    _assert_all_rejected(seeded, dump_db, cases, "validation_error")


def test_empty_or_bad_names(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    names = {"name": ["", "   ", "\t\n", "a/b", "x" * 101]}
    cases = _field_cases(names, PROVIDER, "/providers", "/providers/1")
    model_names = {"model_name": ["", "  ", "m" * 201], "upstream_name": ["u" * 201]}
    cases += _field_cases(model_names, MODEL, "/provider_models", "/provider_models/1")
    cases += _field_cases({"name": ["", " ", "k" * 101]}, KEY, "/keys", "/keys/2")
    cases += [
        ("POST", "/keys", {"json": {**KEY, "key": "short"}}, "key"),
        ("POST", "/keys", {"json": {**KEY, "key": "has a space"}}, "key"),
        ("POST", "/providers", {"json": {**PROVIDER, "personalized_key": ""}}, "personalized_key"),
    ]
    _assert_all_rejected(seeded, dump_db, cases, "validation_error")


def test_negative_or_out_of_range_numbers(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    cases = _field_cases(
        {"timeout_s": [0, -1, 1e9], "weight": [0, -3], "priority": [2**40]},
        PROVIDER, "/providers", "/providers/1",
    )
    cases += _field_cases(
        {
            "input_price": [-1, "-0.000001", "1.1234567", 10**7],
            "output_price": [-0.5],
            "cached_input_price": ["-2"],
            "context_length": [0, -1, 2**31],
        },
        MODEL, "/provider_models", "/provider_models/1",
    )
    cases += _field_cases(
        {
            "rpm": [0, -5, 2**31],
            "tpm": [0],
            "max_concurrency": [-1],
            "token_quota": [0, 2**63],
            "budget_usd": [-0.01, "0.0000001"],
            "provider_ids": [[0], [-1]],
        },
        KEY, "/keys", "/keys/2",
    )
    _assert_all_rejected(seeded, dump_db, cases, "validation_error")


def test_missing_required_fields(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    before = dump_db()
    error = assert_error(seeded.post("/providers", json={"description": "x"}), 400, "validation_error")
    assert set(error["details"]) == {"name", "server_url"}
    error = assert_error(seeded.post("/provider_models", json={"description": "x"}), 400, "validation_error")
    assert set(error["details"]) == {"provider_id", "model_name"}
    error = assert_error(seeded.post("/keys", json={}), 400, "validation_error")
    assert set(error["details"]) == {"name"}
    assert dump_db() == before


WRITE_ENDPOINTS = [
    ("POST", "/providers"),
    ("PUT", "/providers/1"),
    ("PATCH", "/providers/1"),
    ("POST", "/provider_models"),
    ("PUT", "/provider_models/1"),
    ("POST", "/keys"),
    ("PATCH", "/keys/2"),
]
JSON = {"Content-Type": "application/json"}


def test_malformed_json(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    bodies = ['{"name": ', "{'name': 'x'}", '{"name": "x",}', '{"timeout_s": NaN}', "\xff\xfe", "[1, 2"]
    cases: list[Case] = [
        (m, p, {"data": b.encode("utf-8"), "headers": JSON}, None) for m, p in WRITE_ENDPOINTS for b in bodies
    ]
    _assert_all_rejected(seeded, dump_db, cases, "invalid_json")


def test_non_object_json(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    bodies = ["[]", '[{"name": "x"}]', '"a string"', "42", "null", "true"]
    cases: list[Case] = [
        (m, p, {"data": b, "headers": JSON}, None) for m, p in WRITE_ENDPOINTS for b in bodies
    ]
    cases.append(("POST", "/keys/2/rotate", {"data": "[]", "headers": JSON}, None))
    _assert_all_rejected(seeded, dump_db, cases, "invalid_body")


def test_missing_body(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    cases: list[Case] = [(m, p, {}, None) for m, p in WRITE_ENDPOINTS]
    cases += [(m, p, {"data": "  ", "headers": JSON}, None) for m, p in WRITE_ENDPOINTS]
    _assert_all_rejected(seeded, dump_db, cases, "missing_body")


def test_wrong_content_type(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    cases: list[Case] = []
    for method, path in WRITE_ENDPOINTS:
        text_plain = {"data": '{"name": "x"}', "headers": {"Content-Type": "text/plain"}}
        cases.append((method, path, text_plain, None))
        form = {"name": "x", "server_url": "https://x.test"}
        cases.append((method, path, {"data": form}, None))  # form-encoded
    text_body = {"data": '{"key": "abcdefgh1"}', "headers": {"Content-Type": "text/plain"}}
    cases.append(("POST", "/keys/2/rotate", text_body, None))
    _assert_all_rejected(seeded, dump_db, cases, "invalid_content_type")


def test_bad_query_parameters(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    before = dump_db()
    for path in (
        "/providers?limit=abc", "/provider_models?provider_id=x", "/keys?offset=-2", "/audit?limit=0",
        "/audit?resource=users", "/audit?resource_id=abc", "/stats/total?start_date=yesterday",
        "/stats/total?end_date=2026-02-30", "/stats/total?start_date=2026-05-02&end_date=2026-05-01",
        "/stats/conversation/c1?start_date=13/01/2026",
    ):
        error = assert_error(seeded.get(path), 400, "invalid_parameter")
        assert error["details"], path
    assert dump_db() == before


def test_body_too_large_is_413(
    start_admin: Callable[..., AdminClient], settings: Any, dump_db: Callable[[], Dump]
) -> None:
    admin = start_admin(settings.with_overrides(max_body_bytes=1024))
    before = dump_db()
    body = {**PROVIDER, "description": "x" * 5000}
    error = assert_error(admin.post("/providers", json=body), 413, "request_too_large")
    assert error["type"] == "invalid_request_error"
    assert dump_db() == before


def test_unknown_paths_and_methods(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    before = dump_db()
    unknown = [
        ("GET", "/nope"), ("GET", "/providers/abc"), ("POST", "/v1/chat/completions"),  # GET / is the console
        ("GET", "/providers/1/models/1"), ("GET", "/provider_models/-1"),
    ]
    for method, path in unknown:
        error = assert_error(seeded.request(method, path), 404, "not_found")
        assert error["type"] == "not_found_error"
    for method, path in [("DELETE", "/providers"), ("PUT", "/provider_models"), ("POST", "/providers/1"),
                         ("POST", "/health"), ("DELETE", "/stats/total"), ("GET", "/keys/1/rotate"),
                         ("PATCH", "/audit"), ("POST", "/providers/1/models")]:
        response = seeded.request(method, path, json={})
        assert_error(response, 405, "method_not_allowed")
        assert "Allow" in response.headers
    assert dump_db() == before


def test_values_no_database_can_store(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    cases: list[Case] = []
    for method, path in WRITE_ENDPOINTS:
        for raw in ('{"name": "a\\u0000b"}', '{"description": "\\ud800"}', '{"\\u0000": 1}'):
            cases.append((method, path, {"data": raw, "headers": JSON}, None))
    _assert_all_rejected(seeded, dump_db, cases, "invalid_json")



def test_instants_before_year_one_in_utc_become_the_first_instant(seeded: AdminClient) -> None:
    # 0001-01-01T00:00+01:00 is in year 0 in UTC: no datetime holds it, so it is clamped, not a 500.
    key = seeded.ok("POST", "/keys", 201, json={"name": "k2", "expires_at": "0001-01-01T00:00:00+01:00"})
    assert key["expires_at"] == "0001-01-01T00:00:00+00:00"


def test_out_of_range_ids_and_edge_dates(seeded: AdminClient, dump_db: Callable[[], Dump]) -> None:
    before = dump_db()
    huge = 10**20
    for method, path in [("GET", f"/providers/{huge}"), ("DELETE", f"/keys/{2**31}"),
                         ("GET", f"/provider_models/{2**63}"), ("GET", f"/providers/{huge}/models"),
                         ("POST", f"/keys/{huge}/rotate"), ("GET", "/stats/conversation/a%00b")]:
        assert_error(seeded.request(method, path), 404, "not_found")
    for query in (
        "start_date=9999-12-31",
        "end_date=0001-01-01T00:00:00%2B01:00",
        "end_date=9999-12-31T23:59:59.999999",
    ):
        # The edges of the calendar are valid dates: the window is clamped to what a datetime holds.
        assert seeded.ok("GET", f"/stats/total?{query}")["requests"] == 0
    assert dump_db() == before
