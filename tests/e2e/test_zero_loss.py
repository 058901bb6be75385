"""No acknowledged request goes unrecorded: the proxy SIGKILLed mid-load, or stopped during an outage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.crash import kill_round, outage_round

pytestmark = pytest.mark.db


def test_sigkill_mid_load_loses_no_acknowledged_row_and_writes_none_twice(tmp_path: Path, database_url: str) -> None:
    result = kill_round(tmp_path / "kill", database_url, requests=300)
    assert result.acknowledged >= 150
    assert result.recorded == result.acknowledged and result.duplicates == 0


@pytest.mark.skipif(shutil.which("initdb") is None or shutil.which("pg_ctl") is None,
                    reason="needs PostgreSQL's initdb and pg_ctl for a cluster of its own")
def test_sigterm_during_a_postgresql_outage_keeps_every_row_for_the_next_start(tmp_path: Path) -> None:
    result = outage_round(tmp_path / "outage", outage_s=4.0)
    assert result.acknowledged > 50
    assert result.recorded == result.acknowledged and result.duplicates == 0
    assert "usage rows are waiting in the journal" in result.waiting_at_stop


def test_with_a_recorder_process_a_killed_proxys_rows_are_recorded_without_a_restart(
    tmp_path: Path, database_url: str,
) -> None:
    result = kill_round(tmp_path / "kill", database_url, requests=300, recorder="process")
    assert result.acknowledged >= 150
    assert result.recorded == result.acknowledged and result.duplicates == 0
