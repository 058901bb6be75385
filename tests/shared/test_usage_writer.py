"""The usage writer: batches, refused rows set aside, outages retried."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.models import UsageRecord
from shared.usage_writer import UsageWriter

pytestmark = pytest.mark.db


def _row(request_id: str, conversation_id: str = "c") -> dict:
    return {"request_id": request_id, "model": "m", "status_code": 200, "total_tokens": 3,
            "conversation_id": conversation_id, "cost_usd": Decimal("0.000001"),
            "created_at": datetime.now(timezone.utc)}


def test_a_row_the_database_refuses_does_not_hold_back_the_others(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    spill = tmp_path / "unwritten.jsonl"
    writer = UsageWriter(engine, flush_interval_s=0.05, spill_path=spill)
    writer.start()
    try:
        writer.submit(_row("req_good_1"))
        writer.submit(_row("req_bad", conversation_id="conv-\udcff"))  # not encodable: refused
        writer.submit(_row("req_good_1"))  # duplicate request id: refused too
        writer.submit(_row("req_good_2"))
        assert writer.wait_idle(10)
        writer.submit(_row("req_after"))
        assert writer.wait_idle(10)
    finally:
        writer.stop()
    with Session(engine) as s:
        ids = sorted(s.scalars(select(UsageRecord.request_id)))
    engine.dispose()
    assert ids == ["req_after", "req_good_1", "req_good_2"]
    spilled = [json.loads(line) for line in spill.read_text().splitlines()]
    assert sorted(r["request_id"] for r in spilled) == ["req_bad", "req_good_1"]
