"""Report edge cases: early windows, conversation ids with slashes, deleted keys never lending their id."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.models import UsageRecord
from shared.settings import Settings
from tests.admin.conftest import AdminClient

pytestmark = pytest.mark.db


def _usage(settings: Settings, rows: list[dict[str, Any]]) -> None:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session, session.begin():
            session.execute(insert(UsageRecord), [
                {"model": "m", "status_code": 200, "created_at": datetime.now(timezone.utc), **row} for row in rows
            ])
    finally:
        engine.dispose()


def test_key_usage_window_before_year_one_starts_at_year_one(
    admin: AdminClient, dump_db: Callable[[], Any]
) -> None:
    key = admin.ok("POST", "/keys", 201, json={"name": "k"})
    before = dump_db()

    report = admin.ok("GET", f"/keys/{key['id']}/usage?end_date=0001-01-05&days=30")
    assert report["start"].startswith("0001-01-01T00:00:00")
    assert report["total_requests"] == 0 and len(report["daily_usage"]) == 5
    assert dump_db() == before


def test_new_key_does_not_inherit_a_deleted_keys_usage(admin: AdminClient, settings: Settings) -> None:
    admin.ok("POST", "/keys", 201, json={"name": "first"})
    old = admin.ok("POST", "/keys", 201, json={"name": "old", "token_quota": 1000})
    _usage(settings, [{"request_id": "old-1", "key_id": old["id"], "prompt_tokens": 900, "total_tokens": 900,
                       "cost_usd": Decimal("1.5")}])
    admin.ok("DELETE", f"/keys/{old['id']}")

    new = admin.ok("POST", "/keys", 201, json={"name": "new", "token_quota": 1000})

    quota = admin.ok("GET", f"/keys/{new['id']}/quota")
    assert quota["used"] == {"tokens": 0, "usd": 0.0}, quota
    assert quota["remaining"]["tokens"] == 1000
    assert admin.ok("GET", f"/keys/{new['id']}")["used_tokens"] == 0
    assert admin.ok("GET", f"/keys/{new['id']}/usage?days=1")["total_requests"] == 0


def test_conversation_id_with_a_slash_is_reported(admin: AdminClient, settings: Settings) -> None:
    _usage(settings, [{"request_id": "c-1", "conversation_id": "team/42", "total_tokens": 7, "prompt_tokens": 7}])

    body = admin.ok("GET", "/stats/conversation/team%2F42")

    assert body["conversation_id"] == "team/42"
    assert body["requests"] == 1 and body["total_tokens"] == 7
