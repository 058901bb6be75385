"""Run `python run.py` (or one mode of it) as a real subprocess for end-to-end tests.

    from tests.support.nexus_process import NexusProcess

    nx = NexusProcess(database_url, tmp_path / "nx", admin_token="t0k3n").start()
    nx.admin("POST", "/providers", json={...})       # requests.Response, Bearer added
    requests.get(nx.proxy_url + "/v1/models", ...)   # the proxy, over loopback
    openai.OpenAI(base_url=nx.proxy_url + "/v1", api_key=client_key)
    assert nx.stop() == 0                             # SIGTERM, returns run.py's exit code

In tests prefer the fixtures of `tests/e2e/conftest.py`: `nexus` (started, with an
admin token) and `nexus_factory(env=None, *, mode="all", admin_token=..., start=True)`;
everything they start is stopped at teardown.

`NexusProcess(database_url, base_dir, *, mode="all", admin_token=DEFAULT_ADMIN_TOKEN,
env=None, startup_timeout=30.0)`:

- `mode`: "all" (`python run.py`), "admin" or "proxy" (`python run.py admin|proxy`).
- Free ports on 127.0.0.1 are picked for both servers (kept across restarts).
- The environment sets every documented variable explicitly (so a developer's
  shell or `.env` cannot leak in): DATABASE_URL, ADMIN_HOST/PORT, PROXY_HOST/PORT
  (127.0.0.1), ADMIN_TOKEN ("" when None), ARCHIVE_MESSAGES=0, DATA_DIR, LOG_DIR,
  MESSAGES_DIR under `base_dir`, LOG_LEVEL=INFO; `env` overrides any of them.
- `start()` launches and waits (bounded) until GET /health answers 200 on each
  server of the mode; raises `NexusStartError` (with the output) if it exits or
  times out. Returns self. May be called again after `stop()` (same ports, dirs).
- `stop(sig=SIGTERM, timeout=30.0) -> int`: signal run.py, wait, return its exit
  code (SIGKILL and `NexusStopTimeout` if it does not exit in time).
- `wait(timeout=30.0) -> int`: wait for run.py to exit by itself.
- `admin(method, path, **kw) -> requests.Response`: request to the admin with
  `Authorization: Bearer <admin_token>` (when there is one) and a 10 s timeout.
- Attributes: `admin_url`, `proxy_url`, `admin_port`, `proxy_port`,
  `admin_token`, `base_dir`, `data_dir`, `log_dir`, `messages_dir`, `env`,
  `mode`, `process` (the Popen of run.py), `pid`.
- Output of the current run: `stdout`, `stderr` (text, read from files, so
  pipes never fill up), `server_pids` ({"admin": pid, "proxy": pid} parsed from
  run.py's `NexusAI <name> listening on <url> (pid <pid>)` lines).

Module functions: `free_port()`, `pid_alive(pid)`, `descendants(pid)` (via /proc,
so gunicorn workers can be checked too).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_PY = REPO_ROOT / "run.py"
DEFAULT_ADMIN_TOKEN = "nx-admin-test-token-4f1c9e"
LISTENING = re.compile(r"^NexusAI (\w+) listening on (\S+) \(pid (\d+)\)$", re.MULTILINE)
MODES = ("all", "admin", "proxy")
START_ATTEMPTS = 3  # another process may grab a port we picked; try fresh ones


class NexusStartError(RuntimeError):
    """run.py exited or did not become healthy in time."""


class NexusStopTimeout(RuntimeError):
    """run.py did not exit in time after being signalled (it was killed)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren, ...), via /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if pid_alive(p)]


class NexusProcess:
    """One `python run.py [mode]` subprocess with its own ports and directories."""

    def __init__(
        self,
        database_url: str,
        base_dir: Path,
        *,
        mode: str = "all",
        admin_token: str | None = DEFAULT_ADMIN_TOKEN,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.database_url = database_url
        self.base_dir = Path(base_dir)
        self.mode = mode
        self.admin_token = admin_token
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.data_dir = self.base_dir / "data"
        self.log_dir = self.base_dir / "logs"
        self.messages_dir = self.base_dir / "messages"
        self.process: subprocess.Popen[bytes] | None = None
        self._runs = 0
        self._pick_ports()

    # --- configuration --------------------------------------------------

    def _pick_ports(self) -> None:
        self.admin_port = self._port_from_env("ADMIN_PORT")
        self.proxy_port = self._port_from_env("PROXY_PORT")
        self.env = self._build_env()

    def _port_from_env(self, name: str) -> int:
        # A port given in `env` wins; an unparsable one is left for run.py to reject.
        raw = self.extra_env.get(name, "")
        return int(raw) if raw.isdigit() else free_port()

    def _build_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            ADMIN_HOST="127.0.0.1",
            ADMIN_PORT=str(self.admin_port),
            PROXY_HOST="127.0.0.1",
            PROXY_PORT=str(self.proxy_port),
            ADMIN_TOKEN=self.admin_token or "",
            ARCHIVE_MESSAGES="0",
            DATA_DIR=str(self.data_dir),
            LOG_DIR=str(self.log_dir),
            MESSAGES_DIR=str(self.messages_dir),
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.pop("NEXUSAI_SUPERVISOR_PID", None)
        env.update(self.extra_env)
        return env

    @property
    def admin_url(self) -> str:
        """Base URL of the admin API."""
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def proxy_url(self) -> str:
        """Base URL of the proxy (append /v1 for the OpenAI SDK)."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def pid(self) -> int:
        """Pid of run.py."""
        assert self.process is not None, "not started"
        return self.process.pid

    # --- output ---------------------------------------------------------

    def _out_path(self, stream: str) -> Path:
        return self.base_dir / f"run-{self._runs}.{stream}"

    @property
    def stdout(self) -> str:
        """Everything run.py (and its children) printed on stdout in the current run."""
        return self._read(self._out_path("stdout"))

    @property
    def stderr(self) -> str:
        """Everything run.py (and its children) printed on stderr in the current run."""
        return self._read(self._out_path("stderr"))

    @staticmethod
    def _read(path: Path) -> str:
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def server_pids(self) -> dict[str, int]:
        """{"admin": pid, "proxy": pid} as announced by run.py in the current run."""
        return {name: int(pid) for name, _url, pid in LISTENING.findall(self.stdout)}

    def _servers(self) -> dict[str, str]:
        urls = {"admin": self.admin_url, "proxy": self.proxy_url}
        return urls if self.mode == "all" else {self.mode: urls[self.mode]}

    # --- lifecycle ------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while run.py has not exited."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> NexusProcess:
        """Launch run.py and wait until every server of the mode answers GET /health."""
        if self.running:
            raise RuntimeError("already running")
        for attempt in range(1, START_ATTEMPTS + 1):
            self._launch()
            try:
                self._wait_healthy()
                return self
            except NexusStartError:
                port_taken = "cannot listen on" in self.stderr and self.process is not None
                if port_taken and self.process.poll() == 2 and attempt < START_ATTEMPTS:
                    self._pick_ports()
                    continue
                self._kill()
                raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._runs += 1
        with open(self._out_path("stdout"), "wb") as out, open(self._out_path("stderr"), "wb") as err:
            args = [sys.executable, str(RUN_PY)] + ([] if self.mode == "all" else [self.mode])
            self.process = subprocess.Popen(
                args, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )

    def _wait_healthy(self) -> None:
        assert self.process is not None
        pending = dict(self._servers())
        deadline = time.monotonic() + self.startup_timeout
        with requests.Session() as http:
            while pending:
                if self.process.poll() is not None:
                    raise NexusStartError(self._describe(f"run.py exited with {self.process.returncode}"))
                if time.monotonic() > deadline:
                    raise NexusStartError(self._describe(f"not healthy after {self.startup_timeout}s"))
                for name, url in list(pending.items()):
                    try:
                        if http.get(url + "/health", timeout=1).status_code == 200:
                            del pending[name]
                    except requests.RequestException:
                        pass
                if pending:
                    time.sleep(0.1)

    def _describe(self, what: str) -> str:
        return f"{what}\n--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-8000:]}"

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for run.py to exit on its own; its exit code."""
        assert self.process is not None, "not started"
        return self.process.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` to run.py and return its exit code once it has exited."""
        assert self.process is not None, "not started"
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise NexusStopTimeout(self._describe(f"run.py ignored {signal.Signals(sig).name}")) from None
        return int(self.process.returncode)

    def _kill(self) -> None:
        # The children die with run.py (PR_SET_PDEATHSIG), but do not rely on it here.
        if self.process is None:
            return
        stragglers = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in stragglers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Stop if running (SIGTERM, then SIGKILL); for teardown."""
        if self.running:
            try:
                self.stop()
            except NexusStopTimeout:
                pass

    def __enter__(self) -> NexusProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- clients --------------------------------------------------------

    def admin(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Call the admin API with the Bearer token (if any); `kw` go to `requests.request`."""
        headers = dict(kw.pop("headers", None) or {})
        if self.admin_token:
            headers.setdefault("Authorization", f"Bearer {self.admin_token}")
        kw.setdefault("timeout", 10)
        return requests.request(method, self.admin_url + path, headers=headers, **kw)
