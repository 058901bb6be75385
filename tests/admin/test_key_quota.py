"""`GET /keys/{id}` consumption figures and `GET /keys/{id}/quota`, from recorded usage."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.models import UsageRecord
from tests.admin.conftest import AdminClient, assert_error

pytestmark = pytest.mark.db


def _usage(database_url: str, key_id: int, rows: list[tuple[datetime, int, str]]) -> None:
    engine = make_engine(database_url)
    try:
        with Session(engine) as s, s.begin():
            s.execute(insert(UsageRecord), [
                {"request_id": f"req_{key_id}_{i}", "key_id": key_id, "model": "m", "status_code": 200,
                 "total_tokens": tokens, "prompt_tokens": tokens, "cost_usd": Decimal(cost), "created_at": when}
                for i, (when, tokens, cost) in enumerate(rows)
            ])
    finally:
        engine.dispose()


def test_quota_report_counts_only_the_current_period(admin: AdminClient) -> None:
    key = admin.ok("POST", "/keys", 201, json={"name": "q", "token_quota": 1000, "budget_usd": 2,
                                                "quota_period": "daily", "rpm": 60, "tpm": 5000})
    now = datetime.now(timezone.utc)
    _usage(admin.settings.database_url, key["id"], [
        (now - timedelta(days=2), 700, "1.5"),  # an earlier day: not counted
        (now, 150, "0.25"),
        (now, 100, "0.25"),
    ])
    q = admin.ok("GET", f"/keys/{key['id']}/quota")
    assert q["limits"] == {"tokens": 1000, "usd": 2.0}
    assert q["used"] == {"tokens": 250, "usd": 0.5}
    assert q["remaining"] == {"tokens": 750, "usd": 1.5}
    assert q["usage_percent"] == {"tokens": 25.0, "usd": 25.0}
    assert q["rate_limits"] == {"rpm": 60, "tpm": 5000, "max_concurrency": None}
    tomorrow = (now + timedelta(days=1)).date().isoformat()
    assert q["reset_date"].startswith(tomorrow + "T00:00:00")
    assert q["period_start"].startswith(now.date().isoformat())

    detail = admin.ok("GET", f"/keys/{key['id']}")
    assert (detail["used_tokens"], detail["used_usd"]) == (250, 0.5)
    assert detail["period_resets_at"] == q["reset_date"]
    assert "key" not in detail and "key_hash" not in detail


def test_total_period_counts_everything_and_never_resets(admin: AdminClient) -> None:
    key = admin.ok("POST", "/keys", 201, json={"name": "t", "token_quota": 100})
    _usage(admin.settings.database_url, key["id"], [(datetime(2020, 1, 1, tzinfo=timezone.utc), 130, "0")])
    q = admin.ok("GET", f"/keys/{key['id']}/quota")
    assert q["used"]["tokens"] == 130 and q["remaining"]["tokens"] == 0 and q["usage_percent"]["tokens"] == 130.0
    assert q["reset_date"] is None and q["period_start"] is None
    assert q["limits"]["usd"] is None and q["remaining"]["usd"] is None


def test_monthly_period_and_unknown_key(admin: AdminClient) -> None:
    key = admin.ok("POST", "/keys", 201, json={"name": "m", "budget_usd": 10, "quota_period": "monthly"})
    now = datetime.now(timezone.utc)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    _usage(admin.settings.database_url, key["id"], [(first - timedelta(seconds=1), 10, "9"), (first, 10, "1")])
    q = admin.ok("GET", f"/keys/{key['id']}/quota")
    assert q["used"]["usd"] == 1.0 and q["remaining"]["usd"] == 9.0
    assert q["period_start"].startswith(first.date().isoformat())
    assert_error(admin.get("/keys/99999/quota"), 404)
