"""The usage journal and its recorder: journaled first, recorded once, nothing lost on the way."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.models import UsageRecord
from shared.usage_journal import JournalError, JournalRecorder, UsageRecorder, backlog, journal_rows

pytestmark = pytest.mark.db

DEAD_URL = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1"


def _row(request_id: str, conversation_id: str = "c", cost: str = "0.000001") -> dict:
    return {"request_id": request_id, "model": "m", "status_code": 200, "total_tokens": 3,
            "conversation_id": conversation_id, "cost_usd": Decimal(cost),
            "created_at": datetime.now(timezone.utc)}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def _recorded(engine: Engine) -> list[UsageRecord]:
    with Session(engine) as s:
        return list(s.scalars(select(UsageRecord).order_by(UsageRecord.request_id)))


def test_rows_are_on_disk_before_the_database_sees_them_and_recorded_exactly(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    recorder = UsageRecorder(engine, root, flush_interval_s=0.05)
    recorder.open()  # journaling works before the recorder thread runs at all
    recorder.submit(_row("req_1", cost="0.0000123"))
    recorder.submit(_row("req_2"))
    assert [r["request_id"] for r in journal_rows(root)] == ["req_1", "req_2"]
    assert backlog(root) == 2 and _recorded(engine) == []
    recorder.start()
    try:
        assert recorder.wait_idle(10)
    finally:
        assert recorder.stop(10) == 0
    rows = _recorded(engine)
    assert [r.request_id for r in rows] == ["req_1", "req_2"]
    assert rows[0].cost_usd == Decimal("0.0000123")  # Decimal survives the JSON round trip exactly
    assert rows[0].created_at.replace(tzinfo=None) <= datetime.now(timezone.utc).replace(tzinfo=None)
    assert backlog(root) == 0


def test_journal_files_are_private(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    recorder = UsageRecorder(engine, root)
    recorder.open()
    recorder.submit(_row("req_1"))
    try:
        paths = [root, *root.rglob("*")]
        for path in paths:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    finally:
        recorder.stop(0.1)


def test_a_row_the_database_refuses_does_not_hold_back_the_others(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    recorder = UsageRecorder(engine, root, flush_interval_s=0.05)
    recorder.start()
    try:
        recorder.submit(_row("req_good_1"))
        recorder.submit(_row("req_bad", conversation_id="conv-\udcff"))  # not encodable: refused
        recorder.submit(_row("req_good_1"))  # a duplicate request id is the same row: recorded once
        recorder.submit(_row("req_good_2"))
        assert recorder.wait_idle(10)
        recorder.submit(_row("req_after"))
        assert recorder.wait_idle(10)
    finally:
        recorder.stop(10)
    assert [r.request_id for r in _recorded(engine)] == ["req_after", "req_good_1", "req_good_2"]
    refused = [json.loads(line) for line in (root / "refused.jsonl").read_text().splitlines()]
    assert [r["request_id"] for r in refused] == ["req_bad"]
    assert backlog(root) == 0


def test_an_outage_keeps_rows_journaled_and_the_next_start_records_them_once(
    engine: Engine, database_url: str, tmp_path: Path,
) -> None:
    root = tmp_path / "journal"
    dead = make_engine(DEAD_URL)
    recorder = UsageRecorder(dead, root, flush_interval_s=0.05, batch_size=7)
    recorder.start()
    for i in range(50):
        recorder.submit(_row(f"req_{i:03d}"))
    assert not recorder.wait_idle(0.5)
    left = recorder.stop(1.0)  # "shutdown" during the outage: nothing dropped, all still on disk
    dead.dispose()
    assert left == 50 and backlog(root) == 50

    # The database is back: a new process starts and records what was left, then its own rows.
    again = UsageRecorder(engine, root, flush_interval_s=0.05, batch_size=7)
    again.start()
    again.submit(_row("req_new"))
    try:
        assert again.wait_idle(15)
    finally:
        assert again.stop(10) == 0
    ids = [r.request_id for r in _recorded(engine)]
    assert ids == [f"req_{i:03d}" for i in range(50)] + ["req_new"]
    # Finished segments are removed: only the current (empty) one of the last run remains.
    assert len(list(root.glob("slot-0/*.jsonl"))) == 1


def test_a_replay_after_a_lost_checkpoint_writes_no_row_twice(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    first = UsageRecorder(engine, root, flush_interval_s=0.05)
    first.start()
    for i in range(5):
        first.submit(_row(f"req_{i}"))
    assert first.wait_idle(10)
    # A crash between the database commit and the checkpoint: the journal still holds every line.
    segment = sorted(root.glob("slot-0/*.jsonl"))[-1]
    first.stop(5)
    (root / "slot-0" / "checkpoint").write_text("0 0\n")
    segment.write_bytes(b"".join(json.dumps(_row(f"req_{i}"), default=str).encode() + b"\n" for i in range(5)))
    second = UsageRecorder(engine, root, flush_interval_s=0.05)
    second.start()
    try:
        assert second.wait_idle(10)
    finally:
        second.stop(5)
    assert [r.request_id for r in _recorded(engine)] == [f"req_{i}" for i in range(5)]


def test_segments_rotate_and_a_torn_last_line_is_set_aside(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    recorder = UsageRecorder(engine, root, segment_bytes=600)
    recorder.open()
    for i in range(12):
        recorder.submit(_row(f"req_{i:02d}"))
    segments = sorted((root / "slot-0").glob("*.jsonl"))
    assert len(segments) >= 3
    with segments[0].open("ab") as fh:
        fh.write(b'{"request_id": "req_torn", "mod')  # the machine died mid-write
    recorder.start()
    try:
        assert recorder.wait_idle(10)
    finally:
        recorder.stop(5)
    assert [r.request_id for r in _recorded(engine)] == [f"req_{i:02d}" for i in range(12)]
    assert b"req_torn" in (root / "refused.jsonl").read_bytes()
    assert len(list((root / "slot-0").glob("*.jsonl"))) == 1


def test_a_slot_left_by_a_dead_process_is_drained_by_the_next(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    live = UsageRecorder(make_engine(DEAD_URL), root)
    live.open()  # holds slot-0 (as a running worker would)
    other = UsageRecorder(engine, root)
    other.open()
    assert other.slot == root / "slot-1"
    other.submit(_row("req_orphan"))
    other.stop(0.1)  # never started: its row stays in slot-1, whose lock is now free
    third = UsageRecorder(engine, root, flush_interval_s=0.05)
    third.start()
    try:
        assert third.slot == root / "slot-1"
        assert third.wait_idle(10)
    finally:
        third.stop(5)
        live.stop(0.1)
    assert [r.request_id for r in _recorded(engine)] == ["req_orphan"]


def test_a_journal_that_cannot_be_written_falls_back_to_the_database(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    recorder = UsageRecorder(engine, root, flush_interval_s=0.05)
    recorder.start()
    try:
        os.close(recorder._fd)  # the journal's file is gone (a full or broken disk)
        recorder.submit(_row("req_disk_trouble"))
        assert recorder.wait_idle(10)
    finally:
        recorder._fd = -1
        recorder.stop(5)
    assert [r.request_id for r in _recorded(engine)] == ["req_disk_trouble"]


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_recorder_process_records_live_slots_across_segments_exactly_once(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    writers = [UsageRecorder(engine, root, segment_bytes=700, record_journal=False) for _ in range(2)]
    for writer in writers:
        writer.start()
    recorder = JournalRecorder(engine, root, flush_interval_s=0.02, batch_size=7)
    worker = threading.Thread(target=recorder.run)
    worker.start()
    try:
        for i in range(40):
            writers[i % 2].submit(_row(f"req_{i:02d}"))
        assert len(list((root / "slot-0").glob("*.jsonl"))) >= 1
        # Recorded while the writers still hold their slots: nothing waits for them to stop.
        assert _wait_for(lambda: len(_recorded(engine)) == 40)
        assert all(w.wait_idle(0) for w in writers)  # a writer of this kind has nothing to wait for
        for writer in writers:
            assert writer.stop(5) == 0
        recorder.stop(5)
        worker.join(10)
        assert not worker.is_alive()
    finally:
        recorder.stop(0)
        worker.join(10)
    assert [r.request_id for r in _recorded(engine)] == [f"req_{i:02d}" for i in range(40)]
    assert backlog(root) == 0
    for slot in ("slot-0", "slot-1"):
        assert len(list((root / slot).glob("*.jsonl"))) == 1  # finished segments are deleted


def test_one_recorder_process_per_journal(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    first = JournalRecorder(engine, root)
    first.claim()
    with pytest.raises(JournalError, match="another usage recorder"):
        JournalRecorder(engine, root).claim()
    first.stop(0)
    assert first.run() == 0  # stopped with nothing to record: returns at once and lets go
    JournalRecorder(engine, root).claim()


def test_a_stopping_recorder_waits_for_live_proxies_then_drains_them(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "journal"
    writer = UsageRecorder(engine, root, record_journal=False)
    writer.start()
    recorder = JournalRecorder(engine, root, flush_interval_s=0.02)
    recorder.stop(30)  # the signal came first, as when run.py stops everything at once
    worker = threading.Thread(target=recorder.run)
    worker.start()
    try:
        writer.submit(_row("req_before"))
        time.sleep(0.3)
        assert worker.is_alive()  # a proxy still holds its slot: the recorder keeps going
        writer.submit(_row("req_last"))  # the proxy's last request, answered during its shutdown
        writer.stop(5)
        worker.join(10)
        assert not worker.is_alive()
    finally:
        recorder.stop(0)
        worker.join(10)
    assert [r.request_id for r in _recorded(engine)] == ["req_before", "req_last"]


def test_a_recorder_process_left_by_an_outage_keeps_rows_journaled(tmp_path: Path) -> None:
    root = tmp_path / "journal"
    writer = UsageRecorder(make_engine(DEAD_URL), root, record_journal=False)
    writer.start()
    writer.submit(_row("req_outage"))
    writer.stop(1)
    recorder = JournalRecorder(make_engine(DEAD_URL), root, flush_interval_s=0.02)
    recorder.stop(1.5)
    assert recorder.run() == 1  # the database never came back within the stop budget
    assert [r["request_id"] for r in journal_rows(root)] == ["req_outage"]
