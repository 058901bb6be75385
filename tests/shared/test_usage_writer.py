"""The usage writer: batches, refused rows set aside, outages retried."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.models import UsageRecord
from shared.usage_writer import BOOST_BATCHES, UsageWriter

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


def test_a_backlog_is_written_by_a_helper_without_waiting_for_the_writer(database_url: str) -> None:
    """The writer thread runs at idle priority and may be lingering (here for 5 s) or starved; a
    backlog past BOOST_BATCHES batches is written by a helper thread at once."""
    engine = make_engine(database_url)
    writer = UsageWriter(engine, flush_interval_s=5.0, batch_size=50)
    backlog = BOOST_BATCHES * 50 + 10

    def written() -> int:
        with Session(engine) as s:
            return len(s.scalars(select(UsageRecord.request_id)).all())

    writer.start()
    try:
        writer.submit(_row("req_first"))
        time.sleep(0.3)  # the writer takes it and lingers for more (its flush interval is 5 s)
        for i in range(backlog):
            writer.submit(_row(f"req_{i}"))
        deadline = time.monotonic() + 3.0
        while written() < backlog - 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert written() >= backlog - 50, "the backlog waited for the writer's flush interval"
        assert writer.boosts == 1
    finally:
        writer.stop()
    assert written() == backlog + 1
    engine.dispose()
