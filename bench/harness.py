"""Processes and bookkeeping for benchmarks: seeded database, mock, real proxy, /proc.

The proxy is the real thing: `python run.py proxy` in its own process, on a
SQLite database under a temp dir, migrated with `shared.migrate` and seeded
with the ORM models (a provider pointing at the mock, two models, a client
key). Every feature stays on: key auth, usage rows, the access log (to
LOG_DIR/proxy.log and stderr, here a file), archive when ARCHIVE_MESSAGES=1.

CPU pinning (Linux, >= 2 CPUs): the proxy runs on CPU 0 (`sched_setaffinity`
in the child before exec, so every thread it starts inherits it), the mock
and the load generator share CPU 1. The proxy then never competes with the
load for a core, and its CPU seconds per request are read from
/proc/<pid>/stat (utime + stime, all threads).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

import orjson

from bench.loadgen import Request

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_KEY = "nx-bench-client-key-0123456789abcdefghijklmnopq"
# A key under every limit (none of them reached): admission and settlement do all their work.
LIMITED_KEY = "nx-bench-limited-key-0123456789abcdefghijklmn"
MODEL = "bench-model"
MODEL_NOUSAGE = "bench-model-nousage"
MODEL_CLAUDE = "bench-claude"  # on a provider of kind anthropic: Messages pass through
MODEL_GEMINI = "bench-gemini"  # on a provider of kind gemini: chat translated both ways
MODEL_CHAT_ONLY = "bench-chat-only"  # on a provider declaring apis ["chat"]: Responses go through the translation
PROXY_CPU = 0
LOAD_CPU = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 30.0


def can_pin() -> bool:
    """Whether the proxy and the load can get a CPU each."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def pin_self(cpu: int) -> None:
    """Pin the calling process (and threads it starts later) to one CPU."""
    os.sched_setaffinity(0, {cpu})


def pin_process(pid: int, cpu: int) -> None:
    """Move every thread of a running process to one CPU."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {cpu})
        except OSError:  # the thread just ended
            pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- /proc ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_pids(pid: int) -> list[int]:
    """`pid` and every process below it (run.py's proxy workers), via /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (ended ones count 0)."""
    return own_ticks(pids) / CLK_TCK


def wait_workers(stdout: Path, workers: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until run.py's stdout announces `workers` proxies listening."""
    deadline = time.monotonic() + timeout_s
    while stdout.read_text().count("NexusAI proxy listening") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError("proxy workers did not start")
        time.sleep(0.05)


def busy_ticks() -> int:
    """Non-idle CPU ticks of the whole machine (all CPUs), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def own_ticks(pids: list[int]) -> int:
    """utime + stime ticks of the given processes (missing ones count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


class ForeignCpu:
    """CPU used by processes other than ours over an interval, in % of one CPU."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start()

    def start(self) -> None:
        """Begin an interval."""
        self._t = time.monotonic()
        self._busy = busy_ticks()
        self._own = own_ticks(self.pids)

    def percent(self) -> float:
        """Foreign CPU since `start()`."""
        wall = time.monotonic() - self._t
        foreign = (busy_ticks() - self._busy) - (own_ticks(self.pids) - self._own)
        return max(0.0, 100.0 * foreign / CLK_TCK / wall) if wall > 0 else 0.0


def wait_quiet(pids: list[int], threshold_pct: float = 10.0, timeout_s: float = 60.0) -> float:
    """Wait (bounded) until other processes use under `threshold_pct` of a CPU; the last reading."""
    deadline = time.monotonic() + timeout_s
    while True:
        probe = ForeignCpu(pids)
        time.sleep(0.5)
        pct = probe.percent()
        if pct < threshold_pct or time.monotonic() >= deadline:
            return pct


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def machine_info() -> dict[str, str]:
    """nproc, CPU model and Python version, for the report."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model, "python": sys.version.split()[0]}


def git_commit() -> str:
    """The commit measured (with `+dirty` when the tree has local changes); BENCH_COMMIT overrides."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "proxy_app", "shared", "run.py"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- database ---------------------------------------------------------------


def seed_database(database_url: str, mock_url: str) -> None:
    """Migrate a fresh database and add the mock provider, its models and the client key."""
    from sqlalchemy.orm import Session

    from shared.db import bump_config_version, make_engine
    from shared.migrate import upgrade_database
    from shared.models import ApiKey, Provider, ProviderModel
    from shared.secrets import hash_key, key_hint

    upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        with Session(engine) as s, s.begin():
            provider = Provider(name="mock", server_url=mock_url, server_key="sk-bench-upstream-secret")
            s.add(provider)
            s.flush()
            for name in (MODEL, MODEL_NOUSAGE):
                s.add(ProviderModel(provider_id=provider.id, model_name=name,
                                    input_price=Decimal("0.15"), output_price=Decimal("0.60")))
            chat_only = Provider(name="mock-chat-only", server_url=mock_url, server_key="sk-bench-upstream-secret",
                                 apis=["chat"])
            s.add(chat_only)
            s.flush()
            s.add(ProviderModel(provider_id=chat_only.id, model_name=MODEL_CHAT_ONLY, upstream_name=MODEL,
                                input_price=Decimal("0.15"), output_price=Decimal("0.60")))
            claude = Provider(name="mock-anthropic", kind="anthropic", server_url=mock_url.removesuffix("/v1"),
                              server_key="sk-bench-upstream-secret")
            s.add(claude)
            s.flush()
            s.add(ProviderModel(provider_id=claude.id, model_name=MODEL_CLAUDE, upstream_name=MODEL,
                                input_price=Decimal("0.15"), output_price=Decimal("0.60")))
            gemini = Provider(name="mock-gemini", kind="gemini", server_url=mock_url.removesuffix("/v1"),
                              server_key="sk-bench-upstream-secret")
            s.add(gemini)
            s.flush()
            s.add(ProviderModel(provider_id=gemini.id, model_name=MODEL_GEMINI, upstream_name=MODEL,
                                input_price=Decimal("0.15"), output_price=Decimal("0.60")))
            s.add(ApiKey(name="bench", key_hash=hash_key(CLIENT_KEY), key_hint=key_hint(CLIENT_KEY)))
            s.add(ApiKey(name="bench-limited", key_hash=hash_key(LIMITED_KEY), key_hint=key_hint(LIMITED_KEY),
                         rpm=10_000_000, tpm=2_000_000_000, max_concurrency=100_000, token_quota=10**15,
                         budget_usd=Decimal(10**9), quota_period="daily"))
            bump_config_version(s)
    finally:
        engine.dispose()


def usage_rows(db_path: Path) -> int:
    """How many usage rows the proxy has written."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute("SELECT count(*) FROM usage_record").fetchone()[0])


def wait_usage_rows(db_path: Path, expected: int, timeout: float = 20.0) -> int:
    """Wait (bounded) until `expected` usage rows exist; the count found."""
    deadline = time.monotonic() + timeout
    while True:
        n = usage_rows(db_path)
        if n >= expected or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


# --- processes --------------------------------------------------------------


def _preexec(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _http_get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.read()


class MockProcess:
    """`python -m bench.mock_upstream` in its own process."""

    def __init__(self, workdir: Path, *, latency_ms: float = 0.0, chunks: int = 16,
                 chunk_delay_ms: float = 0.0, cpu: int | None = None) -> None:
        self.out_path = workdir / "mock.out"
        args = [sys.executable, "-m", "bench.mock_upstream", "--port", "0", "--latency-ms", str(latency_ms),
                "--chunks", str(chunks), "--chunk-delay-ms", str(chunk_delay_ms)]
        self.chunks = chunks
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(args, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, preexec_fn=_preexec(cpu))
        self.port = self._wait_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _wait_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("mock upstream listening on "):
                    return int(line.rsplit(" ", 1)[1])
            if self.proc.poll() is not None:
                raise RuntimeError(f"mock upstream exited: {text[-2000:]}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("mock upstream did not start")

    def chat_requests(self) -> int:
        """Chat requests the mock has received so far."""
        return int(json.loads(_http_get(f"http://127.0.0.1:{self.port}/stats"))["chat_requests"])

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 10 s)."""
        _stop(self.proc)


def _server_env(workdir: Path, database_url: str, port: int, env: dict[str, str] | None,
                as_child: bool) -> dict[str, str]:
    full_env = dict(os.environ)
    full_env.pop("NEXUSAI_SUPERVISOR_PID", None)
    full_env.update(
        DATABASE_URL=database_url, PROXY_HOST="127.0.0.1", PROXY_PORT=str(port),
        ADMIN_TOKEN="", ARCHIVE_MESSAGES="0", LOG_LEVEL="INFO",
        DATA_DIR=str(workdir / "data"), LOG_DIR=str(workdir / "logs"), MESSAGES_DIR=str(workdir / "messages"),
    )
    if as_child:
        # Exactly how `python run.py` starts its children: the supervisor has already migrated,
        # so the child skips Alembic (never imported), and it dies with its parent.
        full_env["NEXUSAI_SUPERVISOR_PID"] = str(os.getpid())
    full_env.update(env or {})
    return full_env


class ProxyProcess:
    """`python run.py proxy` on a free loopback port, with everything under `workdir`.

    `as_child=True` starts it the way `python run.py` starts its proxy child (see run.py's
    spawn()): the supervisor has migrated already. Standalone, `run.py proxy` migrates in a
    short-lived child process first.
    """

    def __init__(self, workdir: Path, database_url: str, *, env: dict[str, str] | None = None,
                 cpu: int | None = None, as_child: bool = False, wrapper: Sequence[str] = (),
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_dir = workdir / "logs"
        self.stderr_path = workdir / f"proxy-{self.port}.stderr"
        full_env = _server_env(workdir, database_url, self.port, env, as_child)
        with open(workdir / f"proxy-{self.port}.stdout", "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*wrapper, sys.executable, str(REPO_ROOT / "run.py"), "proxy"], cwd=REPO_ROOT, env=full_env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=_preexec(cpu),
            )
        self.pid = self.proc.pid
        self._wait_healthy(start_timeout_s)

    def _wait_healthy(self, start_timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited {self.proc.returncode}: {self.stderr_path.read_text()[-3000:]}")
            try:
                if _http_get(f"http://127.0.0.1:{self.port}/health", timeout=1.0):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("proxy did not become healthy")

    def stop(self) -> int:
        """SIGTERM (graceful: usage rows flushed) and wait; the exit code."""
        return _stop(self.proc)


class RecorderProcess:
    """`python run.py recorder` (USAGE_RECORDER=process) on the same `workdir` as a ProxyProcess."""

    def __init__(self, workdir: Path, database_url: str, *, env: dict[str, str] | None = None,
                 cpu: int | None = None) -> None:
        full_env = _server_env(workdir, database_url, 0, {"USAGE_RECORDER": "process", **(env or {})}, True)
        with open(workdir / "recorder.stdout", "ab") as out, open(workdir / "recorder.stderr", "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "run.py"), "recorder"], cwd=REPO_ROOT, env=full_env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=_preexec(cpu),
            )
        self.pid = self.proc.pid

    def stop(self) -> int:
        """SIGTERM: it records what the proxies left, then exits."""
        return _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


# --- requests ---------------------------------------------------------------


def chat_request(port: int, *, stream: bool, model: str = MODEL, include_usage: bool = False,
                 conversation: str | None = None, content: str = "Say hello in one short sentence.",
                 key: str = CLIENT_KEY) -> bytes:
    """Raw bytes of one POST /v1/chat/completions."""
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    raw = orjson.dumps(body)
    extra = f"X-Conversation-Id: {conversation}\r\n" if conversation else ""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def embeddings_request(port: int, *, model: str = MODEL, key: str = CLIENT_KEY) -> bytes:
    """Raw bytes of one POST /v1/embeddings (one short input, floats)."""
    raw = orjson.dumps({"model": model, "input": "Embed this short sentence, please.", "encoding_format": "float"})
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def responses_request(port: int, *, model: str = MODEL, key: str = CLIENT_KEY) -> bytes:
    """Raw bytes of one streamed POST /v1/responses (a short input)."""
    raw = orjson.dumps({"model": model, "input": "Say hello in one short sentence.", "stream": True})
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def messages_request(port: int, *, model: str = MODEL_CLAUDE, key: str = CLIENT_KEY) -> bytes:
    """Raw bytes of one streamed POST /v1/messages, as the anthropic SDK sends it."""
    raw = orjson.dumps({"model": model, "max_tokens": 256, "stream": True,
                        "messages": [{"role": "user", "content": "Say hello in one short sentence."}]})
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def messages_validator(chunks: int) -> Callable[[int, bytes], str | None]:
    """A 200 Anthropic stream: every text delta, then `message_delta` with usage and `message_stop`."""

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        deltas = body.count(b"event: content_block_delta\n")
        if deltas != chunks or not body.rstrip().endswith(b'{"type":"message_stop"}') or b'"usage"' not in body:
            return f"stream of {deltas} text deltas (expected {chunks}): {body[-200:]!r}"
        return None

    return check


def responses_validator(chunks: int) -> Callable[[int, bytes], str | None]:
    """A 200 Responses stream: every text delta, then `response.completed` with usage."""

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        deltas = body.count(b"event: response.output_text.delta\n")
        if deltas != chunks or b"event: response.completed\n" not in body[-4096:] or b'"usage"' not in body[-4096:]:
            return f"stream of {deltas} text deltas (expected {chunks}): {body[-200:]!r}"
        return None

    return check


def embeddings_validator(status: int, body: bytes) -> str | None:
    """A 200 list of embeddings."""
    if status != 200 or b'"embedding"' not in body:
        return f"status {status}: {body[:200]!r}"
    return None


def json_validator(status: int, body: bytes) -> str | None:
    """A 200 chat.completion with choices."""
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    if not body.startswith(b"{") or b'"choices"' not in body:
        return f"not a chat completion: {body[:200]!r}"
    return None


def stream_validator(chunks: int, with_usage: bool) -> Callable[[int, bytes], str | None]:
    """A 200 SSE stream with every chunk, the usage chunk only when asked for, and [DONE]."""
    expected = chunks + 3 + (1 if with_usage else 0)  # role + content + finish (+ usage) + [DONE]

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        events = body.count(b"data: ")
        if events != expected or not body.endswith(b"data: [DONE]\n\n"):
            return f"stream of {events} events (expected {expected}): {body[-200:]!r}"
        return None

    return check


def simple_request(port: int, stream: bool, chunks: int, mode: str = "", key: str = CLIENT_KEY) -> Request:
    """The benchmark's request: a short prompt, no conversation id, no usage chunk asked for."""
    if mode == "embeddings":
        return Request(embeddings_request(port), embeddings_validator)
    if mode == "responses":
        return Request(responses_request(port), responses_validator(chunks))
    if mode == "messages":
        return Request(messages_request(port), messages_validator(chunks))
    if mode == "messages-chat":
        return Request(messages_request(port, model=MODEL), messages_validator(chunks))
    if mode == "gemini":
        return Request(chat_request(port, stream=False, model=MODEL_GEMINI, key=key), json_validator)
    if mode == "gemini-stream":  # the client asked for no usage chunk, so none though Gemini reports usage
        return Request(chat_request(port, stream=True, model=MODEL_GEMINI, key=key), stream_validator(chunks, False))
    if mode == "responses-chat":
        return Request(responses_request(port, model=MODEL_CHAT_ONLY), responses_validator(chunks))
    if stream:
        return Request(chat_request(port, stream=True, key=key), stream_validator(chunks, False))
    return Request(chat_request(port, stream=False, key=key), json_validator)


class RedisProcess:
    """A throwaway redis-server (no persistence) on a free loopback port."""

    def __init__(self, workdir: Path, cpu: int | None = None) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        with open(workdir / "redis.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                 "--dir", str(workdir)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_preexec(cpu),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop the server."""
        _stop(self.proc)
