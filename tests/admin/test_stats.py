"""`/stats/total` and `/stats/conversation/<id>`: SQL aggregates over usage_record rows."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.models import UsageRecord
from shared.settings import Settings
from tests.admin.conftest import SEED_PROVIDER, AdminClient, assert_error

pytestmark = pytest.mark.db

FIGURES = {
    "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cache_write_tokens",
    "reasoning_tokens", "errors", "cost_usd", "cost_usd_exact",
    "success_rate", "avg_latency_ms", "p95_latency_ms",
}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


ROWS: list[dict[str, Any]] = [
    dict(request_id="r1", provider_id=1, provider_name="openai", model="gpt-4", conversation_id="c1",
         prompt_tokens=10, completion_tokens=5, total_tokens=15, cost_usd=Decimal("0.000123456789"),
         status_code=200, created_at=_at("2026-05-01T10:00:00")),
    dict(request_id="r2", provider_id=1, provider_name="openai", model="gpt-4o", conversation_id="c1",
         prompt_tokens=20, completion_tokens=0, total_tokens=20, cost_usd=Decimal("0.1"),
         status_code=502, error_type="upstream_error", created_at=_at("2026-05-01T12:00:00")),
    # No recorded provider name: the current provider row names it.
    dict(request_id="r3", provider_id=2, provider_name=None, model="llama3", conversation_id="c2",
         prompt_tokens=100, completion_tokens=50, total_tokens=150, cost_usd=Decimal("1.000000000001"),
         status_code=200, created_at=_at("2026-05-03T00:00:00")),
    dict(request_id="r4", provider_id=None, provider_name=None, model="nope", conversation_id=None,
         status_code=404, error_type="model_not_found", created_at=_at("2026-05-02T23:59:59.999999")),
]


def _insert(settings: Settings, rows: list[dict[str, Any]]) -> None:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session, session.begin():
            session.add_all(UsageRecord(**row) for row in rows)
    finally:
        engine.dispose()


@pytest.fixture
def usage(admin: AdminClient, settings: Settings) -> AdminClient:
    admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)
    admin.ok("POST", "/providers", 201, json={"name": "local", "server_url": "http://127.0.0.1:11434/v1"})
    _insert(settings, ROWS)
    return admin


def _tokens(body: dict[str, Any]) -> tuple[int, int, int, int]:
    return (body["requests"], body["prompt_tokens"], body["completion_tokens"], body["total_tokens"])


def _cost(*amounts: str) -> float:
    return float(sum((Decimal(a) for a in amounts), Decimal(0)))


def test_empty_database(admin: AdminClient) -> None:
    body = admin.ok("GET", "/stats/total")
    assert body == {
        "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0,
        "cache_write_tokens": 0, "reasoning_tokens": 0, "errors": 0,
        "cost_usd": 0, "cost_usd_exact": "0.000000000000", "success_rate": None, "avg_latency_ms": None,
        "p95_latency_ms": None, "by_provider": {}, "by_model": {}, "by_key": {}, "by_api": {},
    }


def test_total_with_breakdowns(usage: AdminClient) -> None:
    body = usage.ok("GET", "/stats/total")
    assert set(body) == FIGURES | {"by_provider", "by_model", "by_key", "by_api"}
    assert _tokens(body) == (4, 130, 55, 185)
    assert body["errors"] == 2
    assert body["cost_usd"] == _cost("0.000123456789", "0.1", "1.000000000001")

    assert set(body["by_provider"]) == {"openai", "local", "unknown"}
    openai = body["by_provider"]["openai"]
    assert set(openai) == FIGURES
    assert (openai["requests"], openai["total_tokens"], openai["errors"]) == (2, 35, 1)
    assert openai["cost_usd"] == _cost("0.000123456789", "0.1")
    assert body["by_provider"]["local"]["total_tokens"] == 150
    assert body["by_provider"]["unknown"] == {
        "requests": 1, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0,
        "cache_write_tokens": 0, "reasoning_tokens": 0, "errors": 1, "cost_usd": 0,
        "cost_usd_exact": "0.000000000000", "success_rate": 0.0, "avg_latency_ms": 0.0, "p95_latency_ms": 0.0,
    }
    assert body["by_key"] == {"none": {k: v for k, v in body.items() if k in FIGURES}}
    assert body["by_api"] == {"chat": {k: v for k, v in body.items() if k in FIGURES}}
    assert body["cost_usd_exact"] == "1.100123456790"
    assert body["success_rate"] == 50.0
    by_model = {m: f["requests"] for m, f in body["by_model"].items()}
    assert by_model == {"gpt-4": 1, "gpt-4o": 1, "llama3": 1, "nope": 1}
    assert body["by_model"]["llama3"]["cost_usd"] == _cost("1.000000000001")


def test_cost_sums_are_exact(admin: AdminClient, settings: Settings) -> None:
    rows = [
        dict(request_id=f"x{i}", model="m", cost_usd=Decimal("0.1"), status_code=200,
             created_at=_at("2026-01-01"))
        for i in range(10)
    ]
    _insert(settings, rows)
    assert admin.ok("GET", "/stats/total")["cost_usd"] == 1.0  # a float sum would give 0.9999999999999999


@pytest.mark.parametrize(
    "query, expected",
    [
        ("start_date=2026-05-02", {"r3", "r4"}),
        ("end_date=2026-05-01", {"r1", "r2"}),
        ("end_date=2026-05-02", {"r1", "r2", "r4"}),
        ("start_date=2026-05-01&end_date=2026-05-01", {"r1", "r2"}),
        ("start_date=2026-05-01T11:00:00Z", {"r2", "r3", "r4"}),
        ("end_date=2026-05-01T12:00:00", {"r1", "r2"}),
        ("start_date=2026-05-01T13:00:00%2B02:00&end_date=2026-05-02T23:59:59", {"r2"}),
        ("start_date=2027-01-01", set()),
    ],
)
def test_date_filters(usage: AdminClient, query: str, expected: set[str]) -> None:
    body = usage.ok("GET", f"/stats/total?{query}")
    chosen = [row for row in ROWS if row["request_id"] in expected]
    assert body["requests"] == len(chosen)
    assert body["total_tokens"] == sum(row.get("total_tokens", 0) for row in chosen)
    assert sum(f["requests"] for f in body["by_model"].values()) == len(chosen)


def test_conversation(usage: AdminClient) -> None:
    body = usage.ok("GET", "/stats/conversation/c1")
    assert set(body) == FIGURES | {"conversation_id", "first_at", "last_at", "models", "by_model"}
    assert body["conversation_id"] == "c1"
    assert _tokens(body) == (2, 30, 5, 35)
    assert body["errors"] == 1 and body["cost_usd"] == _cost("0.000123456789", "0.1")
    assert body["first_at"] in {"2026-05-01T10:00:00+00:00", "2026-05-01T10:00:00Z"}
    assert body["last_at"] in {"2026-05-01T12:00:00+00:00", "2026-05-01T12:00:00Z"}
    assert body["models"] == ["gpt-4", "gpt-4o"]
    assert body["cost_usd_exact"] == "0.100123456789"
    assert set(body["by_model"]) == {"gpt-4", "gpt-4o"}
    assert body["by_model"]["gpt-4"]["cost_usd_exact"] == "0.000123456789"
    assert body["by_model"]["gpt-4o"]["errors"] == 1 and body["by_model"]["gpt-4o"]["success_rate"] == 0.0

    narrowed = usage.ok("GET", "/stats/conversation/c1?start_date=2026-05-01T11:00:00")
    assert narrowed["requests"] == 1 and narrowed["models"] == ["gpt-4o"]


def test_unknown_conversation_is_404(usage: AdminClient) -> None:
    assert_error(usage.get("/stats/conversation/no-such-conversation"), 404, "not_found")
    assert_error(usage.get("/stats/conversation/c2?end_date=2026-05-01"), 404, "not_found")
