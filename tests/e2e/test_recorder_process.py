"""USAGE_RECORDER=process: run.py starts a usage recorder beside the proxy, and it records every row."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from tests.e2e.conftest import NexusFactory
from tests.e2e.test_proxy_sdk import wait_until_served
from tests.support.fake_upstream import FakeUpstream
from tests.support.nexus_process import RUN_PY, NexusProcess, descendants

pytestmark = pytest.mark.db


def _usage_count(nx: NexusProcess, key_id: int, want: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        total = nx.admin("GET", f"/keys/{key_id}/usage").json()["total_requests"]
        if total >= want or time.monotonic() > deadline:
            return int(total)
        time.sleep(0.2)


def _cmdlines(pid: int) -> list[str]:
    lines = []
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as fh:
                lines.append(fh.read().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return lines


def _setup(nx: NexusProcess, upstream: FakeUpstream, serving: NexusProcess | None = None) -> tuple[int, str]:
    provider = nx.admin("POST", "/providers", json={"name": "fake", "server_url": upstream.base_url,
                                                    "server_key": "sk-recorder-upstream-1234"}).json()["id"]
    assert nx.admin("POST", "/provider_models", json={"provider_id": provider,
                                                      "model_name": "gpt-4o-mini"}).status_code == 201
    created = nx.admin("POST", "/keys", json={"name": "rec"}).json()
    wait_until_served(serving or nx, created["key"])
    return created["id"], created["key"]


def _chat(nx: NexusProcess, key: str, stream: bool = False) -> None:
    r = requests.post(nx.proxy_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini", "stream": stream,
                            "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code == 200, r.text


def test_run_py_starts_a_recorder_and_every_row_reaches_the_database(
    nexus_factory: NexusFactory, upstream: FakeUpstream,
) -> None:
    nx = nexus_factory(env={"USAGE_RECORDER": "process", "CONFIG_POLL_INTERVAL": "0.3"})
    assert any(line.endswith("run.py recorder ") for line in _cmdlines(nx.pid)), _cmdlines(nx.pid)
    key_id, key = _setup(nx, upstream)
    for i in range(6):
        _chat(nx, key, stream=i % 2 == 1)
    assert _usage_count(nx, key_id, 6) == 6  # recorded while the proxy runs
    _chat(nx, key)
    assert nx.stop() == 0
    assert "stopped cleanly" in nx.stderr
    assert "usage rows are waiting" not in nx.stderr
    recorder_log = (nx.log_dir / "recorder.log").read_text()
    assert "usage recorder stopped" in recorder_log
    nx.start()
    assert _usage_count(nx, key_id, 7, timeout=2) == 7  # the last row too, exactly once


def test_a_lone_proxy_supervises_its_own_recorder(nexus_factory: NexusFactory, upstream: FakeUpstream) -> None:
    admin = nexus_factory(mode="admin")
    proxy = nexus_factory(env={"USAGE_RECORDER": "process", "CONFIG_POLL_INTERVAL": "0.3"}, mode="proxy")
    key_id, key = _setup(admin, upstream, serving=proxy)  # one database: managed by one, served by the other
    lines = _cmdlines(proxy.pid)
    assert any(line.endswith("run.py recorder ") for line in lines), lines
    assert any(line.endswith("run.py proxy ") for line in lines), lines
    _chat(proxy, key)
    assert _usage_count(admin, key_id, 1) == 1
    assert proxy.stop() == 0


def test_a_second_recorder_on_the_same_journal_refuses_to_start(nexus_factory: NexusFactory) -> None:
    nx = nexus_factory(env={"USAGE_RECORDER": "process"})
    other = subprocess.run([sys.executable, str(RUN_PY), "recorder"], env=nx.env, capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert other.returncode == 2
    assert "refusing to start: another usage recorder already records" in other.stderr
