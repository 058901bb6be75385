"""run.py refuses overlapping admin and proxy addresses before starting anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.conftest import NexusFactory
from tests.support.nexus_process import RUN_PY, free_port

pytestmark = pytest.mark.db


def test_admin_and_proxy_on_the_same_port_is_refused_up_front(nexus_factory: NexusFactory) -> None:
    port = str(free_port())
    proc = nexus_factory({"ADMIN_PORT": port, "PROXY_PORT": port}, start=False)

    result = subprocess.run(
        [sys.executable, str(RUN_PY)], env=proc.env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )

    assert "listening on" not in result.stdout, result.stdout
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f":{port}" in lines[0], result.stderr[-2000:]
