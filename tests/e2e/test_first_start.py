"""What a first `python run.py` prints: each line once, every line true, one screen in all."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from shared.migrate import alembic_config
from tests.support.nexus_process import NexusProcess

pytestmark = pytest.mark.db

SCREEN_LINES = 24
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \[([\w.]+)\] (.*)$")


def _wait_for(nx: NexusProcess, text: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in nx.stderr:
        assert time.monotonic() < deadline, f"{text!r} never appeared:\n{nx.stderr}"
        time.sleep(0.05)


def test_a_first_start_says_each_thing_once_and_truly(tmp_path: Path, fresh_database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(fresh_database_url)).get_current_head()
    with NexusProcess(fresh_database_url, tmp_path / "nx", admin_token=None) as nx:
        _wait_for(nx, "config loaded")
        time.sleep(0.5)  # anything a worker would say late
        assert nx.stop(signal.SIGINT) == 0
        pids = nx.server_pids
        stdout, stderr = nx.stdout, nx.stderr

    # stdout: where each server listens, once each, with the pids that really serve.
    assert sorted(stdout.splitlines()) == [
        f"NexusAI admin listening on {nx.admin_url} (pid {pids['admin']})",
        f"NexusAI proxy listening on {nx.proxy_url} (pid {pids['proxy']})",
    ]

    lines = stderr.splitlines()
    parsed = [LOG_LINE.match(line) for line in lines]
    assert all(parsed), f"lines not in the log format:\n{stderr}"
    records = [(m.group(1), m.group(2), m.group(3)) for m in parsed if m]
    assert len(lines) + len(stdout.splitlines()) <= SCREEN_LINES, stderr
    assert len(set(lines)) == len(lines)  # nothing said twice
    # Only our own loggers: no library's INFO chatter (gunicorn, alembic) at the default level.
    assert {name.split(".")[0] for _, name, _ in records} == {"nexusai"}, stderr

    warnings = [message for level, _, message in records if level == "WARNING"]
    assert warnings[0] == (
        "ADMIN_TOKEN is not set: the admin API is unauthenticated and bound to loopback "
        f"(127.0.0.1:{nx.admin_port}) only"
    )
    # The only other warning a first start may give: o200k_base cannot be had offline (true here).
    assert all(w.startswith("tiktoken encoding o200k_base unavailable") for w in warnings[1:]), warnings
    assert not any("cl100k_base unavailable" in w for w in warnings)

    messages = [message for _, _, message in records]
    database = [m for m in messages if m.startswith("database ")]
    assert len(database) == 1 and database[0].endswith(f": schema created (revision {head})")
    assert "never reused on SQLite" not in stderr  # no migration narrates itself
    assert f"started admin (pid {pids['admin']})" in messages
    assert f"started proxy (pid {pids['proxy']})" in messages
    assert "config loaded: version 0, 0 keys, 0 models" in messages
    assert messages[-1] == "stopped cleanly"
    assert not [r for r in records if r[0] in ("ERROR", "CRITICAL")]

    # The log file keeps the listening lines that stdout showed the terminal.
    run_log = "".join(p.read_text() for p in nx.log_dir.glob("*.log"))
    assert f"admin listening on {nx.admin_url} (pid {pids['admin']})" in run_log
    assert f"proxy listening on {nx.proxy_url} (pid {pids['proxy']})" in run_log


def test_a_second_start_says_the_schema_is_up_to_date(tmp_path: Path, fresh_database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(fresh_database_url)).get_current_head()
    with NexusProcess(fresh_database_url, tmp_path / "nx", mode="admin") as nx:
        nx.stop()
        nx.start()
        nx.stop()
        assert f"schema up to date (revision {head})" in nx.stderr
        assert "schema created" not in nx.stderr
