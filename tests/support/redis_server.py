"""A throwaway `redis-server` on a free loopback port, for the limiter tests.

    server = RedisServer(tmp_dir).start()
    server.url                 # redis://127.0.0.1:<port>/0
    server.stop(); server.start()  # same port: "Redis went away and came back" (empty: no persistence)

Debian's package provides the binary; without it the tests that need it are skipped,
unless NEXUSAI_REQUIRE_REDIS=1 (set by `.ci/run`), which makes a missing server an error.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.nexus_process import free_port

START_TIMEOUT_S = 10.0


def redis_binary() -> str:
    """The redis-server to run, or a skip (an error under NEXUSAI_REQUIRE_REDIS=1)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.environ.get("NEXUSAI_REQUIRE_REDIS") == "1":
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    pytest.skip("redis-server is not installed")


class RedisServer:
    """One redis-server process with no persistence, bound to 127.0.0.1 only."""

    def __init__(self, base_dir: Path, *, password: str | None = None) -> None:
        self.binary = redis_binary()
        self.base_dir = base_dir
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The REDIS_URL of this server (with its password, if it has one)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait (bounded) until it answers PING."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.base_dir / "redis.log", "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.base_dir), "--protected-mode", "yes",
             *(["--requirepass", self.password] if self.password else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.base_dir / 'redis.log').read_text()[-2000:]}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING in time")

    def ping(self) -> bool:
        """Whether the server answers PING now (a raw RESP exchange)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                answer = sock.recv(64)
                return answer.startswith(b"+PONG") or answer.startswith(b"-NOAUTH")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGKILL: as abruptly as a crash or a network cut)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None
