"""run.py as operators use it: start-up, announcements, refusals, signals, child death, logs."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import NexusFactory
from tests.support.nexus_process import RUN_PY, NexusProcess, descendants, pid_alive

pytestmark = pytest.mark.db


def _gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _run_to_exit(proc: NexusProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run run.py with the process's environment, expecting it to exit by itself."""
    return subprocess.run(
        [sys.executable, str(RUN_PY), *args],
        env=proc.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_both_servers_answer_and_run_py_says_where(nexus: NexusProcess) -> None:
    admin = requests.get(nexus.admin_url + "/health", timeout=5)
    proxy = requests.get(nexus.proxy_url + "/health", timeout=5)

    assert admin.status_code == 200 and admin.headers["Content-Type"].startswith("application/json")
    assert proxy.status_code == 200 and proxy.headers["Content-Type"].startswith("application/json")
    assert f"NexusAI admin listening on {nexus.admin_url} (pid " in nexus.stdout
    assert f"NexusAI proxy listening on {nexus.proxy_url} (pid " in nexus.stdout
    assert set(nexus.server_pids) == {"admin", "proxy"}

    # /health is open; everything else needs the admin token.
    anonymous = requests.get(nexus.admin_url + "/providers", timeout=5)
    wrong = requests.get(nexus.admin_url + "/providers", headers={"Authorization": "Bearer nope"}, timeout=5)

    assert anonymous.status_code == 401 and "error" in anonymous.json()
    assert wrong.status_code == 401
    assert nexus.admin("GET", "/providers").status_code == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_everything_cleanly(nexus: NexusProcess, sig: signal.Signals) -> None:
    processes = descendants(nexus.pid)  # both servers and the gunicorn workers
    assert set(nexus.server_pids.values()) <= set(processes)

    assert nexus.stop(sig) == 0
    assert _gone(processes), f"still alive: {[p for p in processes if pid_alive(p)]}"
    assert "stopped cleanly" in nexus.stderr
    for name in ("run", "admin", "proxy"):
        assert (nexus.log_dir / f"{name}.log").stat().st_size > 0, name
    assert "admin listening on" in (nexus.log_dir / "admin.log").read_text()
    assert "proxy listening on" in (nexus.log_dir / "proxy.log").read_text()


@pytest.mark.parametrize("victim", ["admin", "proxy"])
def test_a_dying_child_stops_the_other_and_run_py_says_which(
    nexus: NexusProcess, victim: str
) -> None:
    processes = descendants(nexus.pid)
    victim_pid = nexus.server_pids[victim]
    survivor = "proxy" if victim == "admin" else "admin"

    subprocess.run(["kill", "-KILL", str(victim_pid)], check=True)

    assert nexus.wait(30) != 0
    assert f"{victim} (pid {victim_pid}) stopped unexpectedly: killed by signal SIGKILL" in nexus.stderr
    assert f"stopping {survivor}" in nexus.stderr
    assert _gone(processes), f"still alive: {[p for p in processes if pid_alive(p)]}"


def test_children_die_with_a_killed_run_py(nexus: NexusProcess) -> None:
    processes = descendants(nexus.pid)

    assert nexus.stop(signal.SIGKILL) == -signal.SIGKILL
    assert _gone(processes, timeout=15), f"orphans: {[p for p in processes if pid_alive(p)]}"


@pytest.mark.parametrize("mode", ["all", "admin"])
def test_public_admin_without_token_refuses_to_start(nexus_factory: NexusFactory, mode: str) -> None:
    proc = nexus_factory({"ADMIN_HOST": "0.0.0.0"}, mode=mode, admin_token=None, start=False)

    result = _run_to_exit(proc, *([] if mode == "all" else [mode]))

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ADMIN_HOST=0.0.0.0" in lines[0] and "ADMIN_TOKEN" in lines[0]
    assert result.stdout == ""


def test_public_admin_with_token_starts(nexus_factory: NexusFactory) -> None:
    # Binds all interfaces, but the helper still reaches it over loopback.
    nx = nexus_factory({"ADMIN_HOST": "0.0.0.0"})

    assert nx.admin("GET", "/providers").status_code == 200
    assert f"NexusAI admin listening on http://0.0.0.0:{nx.admin_port}" in nx.stdout


def test_without_token_admin_is_open_on_loopback_with_a_warning(nexus_factory: NexusFactory) -> None:
    nx = nexus_factory(admin_token=None)

    assert requests.get(nx.admin_url + "/providers", timeout=5).status_code == 200
    assert "ADMIN_TOKEN is not set" in nx.stderr
    assert "unauthenticated" in (nx.log_dir / "run.log").read_text()


@pytest.mark.parametrize("mode", ["all", "admin", "proxy"])
def test_port_in_use_is_one_clear_line(nexus_factory: NexusFactory, mode: str) -> None:
    proc = nexus_factory(mode=mode, start=False)
    port = proc.proxy_port if mode == "proxy" else proc.admin_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()

        result = _run_to_exit(proc, *([] if mode == "all" else [mode]))

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in lines[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROXY_PORT": "not-a-port"}, "PROXY_PORT must be an integer, got 'not-a-port'"),
        ({"ADMIN_PORT": "70000"}, "ADMIN_PORT must be between 0 and 65535, got 70000"),
    ],
    ids=["not-an-int", "out-of-range"],
)
def test_bad_setting_is_one_clear_line(nexus_factory: NexusFactory, env: dict[str, str], message: str) -> None:
    proc = nexus_factory(env, start=False)

    result = _run_to_exit(proc)

    assert result.returncode == 2
    assert result.stderr.strip() == f"run.py: refusing to start: {message}"


@pytest.mark.parametrize("mode", ["admin", "proxy"])
def test_single_server_modes(nexus_factory: NexusFactory, mode: str) -> None:
    nx = nexus_factory(mode=mode)
    other_url = nx.proxy_url if mode == "admin" else nx.admin_url

    assert list(nx.server_pids) == [mode]
    assert nx.server_pids[mode] == nx.pid  # no supervisor in between
    with pytest.raises(requests.ConnectionError):
        requests.get(other_url + "/health", timeout=2)
    assert (nx.log_dir / f"{mode}.log").is_file()
    assert nx.stop() == 0


def test_run_py_migrates_a_database_that_does_not_exist_yet(
    nexus_factory: NexusFactory, tmp_path: Path
) -> None:
    db_file = tmp_path / "fresh" / "nested" / "nexusai.db"
    nx = nexus_factory({"DATABASE_URL": f"sqlite:///{db_file}"})

    assert db_file.is_file()
    assert nx.admin("GET", "/providers").status_code == 200
    assert "schema created (revision " in (nx.log_dir / "run.log").read_text()

