"""Zero-loss check: kill the proxy mid-load, or stop it during a database outage, then count rows.

    python -m bench.crash kill --requests 2000 --rounds 3        # SIGKILL after half are answered
    python -m bench.crash outage --outage-s 60 --rounds 3         # PostgreSQL down, SIGTERM meanwhile

`kill`: SQLite (or --database-url), 16 concurrent clients, JSON and SSE mixed; once half
the requests are answered the proxy gets SIGKILL, is started again on the same data
directory, and every acknowledged request (a 200 read to its end: [DONE] for a stream)
must have exactly one usage row. `outage`: a throwaway PostgreSQL 15 cluster (initdb and
pg_ctl, as the postgres user when run as root); load runs, the server is stopped with
`-m immediate`, load goes on for --outage-s, the proxy gets SIGTERM while the database is
still down, then the database and the proxy start again and the rows are counted.
Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/crash.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from bench.harness import CLIENT_KEY, MODEL, MockProcess, ProxyProcess, RecorderProcess, free_port, seed_database
from shared.models import UsageRecord
from shared.settings import _database_url


@dataclass
class RoundResult:
    """One round's figures."""

    mode: str
    sent: int
    acknowledged: int
    recorded: int
    duplicates: int
    waiting_at_stop: str = ""

    @property
    def lost(self) -> int:
        return self.acknowledged - self.recorded


async def _load(port: int, total: int, concurrency: int, acked: list[str], stop: asyncio.Event,
                pace_s: float = 0.0) -> int:
    """Send up to `total` requests; collect the request ids of fully answered ones; the number sent."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    sent = 0

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        stream = i % 2 == 1
        body: dict[str, Any] = {"model": MODEL, "stream": stream,
                                "messages": [{"role": "user", "content": f"request {i}"}]}
        try:
            async with session.post(url, json=body, headers=headers) as reply:
                data = await reply.read()
                complete = reply.status == 200 and (not stream or data.rstrip().endswith(b"data: [DONE]"))
                if complete:
                    acked.append(reply.headers["X-Request-Id"])
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            pass

    async def worker(session: aiohttp.ClientSession, queue: asyncio.Queue[int]) -> None:
        nonlocal sent
        while not stop.is_set():
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            sent += 1
            await one(session, i)
            if pace_s:
                await asyncio.sleep(pace_s)

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session, queue) for _ in range(concurrency)))
    return sent


def _count(database_url: str, request_ids: list[str]) -> tuple[int, int]:
    """(acknowledged ids with a row, rows in excess of one per id)."""
    engine = create_engine(_database_url(database_url, Path(".")))
    try:
        with Session(engine) as s:
            found = 0
            excess = 0
            for start in range(0, len(request_ids), 500):
                chunk = request_ids[start:start + 500]
                rows = s.execute(select(UsageRecord.request_id, func.count()).where(
                    UsageRecord.request_id.in_(chunk)).group_by(UsageRecord.request_id)).all()
                found += len(rows)
                excess += sum(n - 1 for _, n in rows)
            return found, excess
    finally:
        engine.dispose()


def _wait_recorded(database_url: str, request_ids: list[str], timeout: float = 60.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        found, excess = _count(database_url, request_ids)
        if found >= len(request_ids) or time.monotonic() > deadline:
            return found, excess
        time.sleep(0.25)


def kill_round(workdir: Path, database_url: str | None, requests: int, concurrency: int = 16,
               recorder: str = "thread") -> RoundResult:
    """SIGKILL the proxy once half the requests are answered; restart; count the acknowledged rows.

    With `recorder="process"` a recorder process runs beside the proxy and the proxy is not
    restarted: the recorder alone must record what the killed proxy journaled.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{workdir / 'nexusai.db'}"
    mock = MockProcess(workdir, chunks=8)
    separate: RecorderProcess | None = None
    try:
        seed_database(url, mock.url)
        if recorder == "process":
            separate = RecorderProcess(workdir, url)
            proxy = ProxyProcess(workdir, url, env={"USAGE_RECORDER": "process"}, as_child=True)
        else:
            proxy = ProxyProcess(workdir, url)
        acked: list[str] = []
        stop = asyncio.Event()

        async def run() -> int:
            async def killer() -> None:
                for _ in range(60_000):
                    if len(acked) >= requests // 2:
                        break
                    await asyncio.sleep(0.001)
                os.kill(proxy.pid, signal.SIGKILL)
                stop.set()
            kill_task = asyncio.create_task(killer())
            sent = await _load(proxy.port, requests, concurrency, acked, stop)
            await kill_task
            return sent

        sent = asyncio.run(run())
        proxy.proc.wait(10)
        if separate is not None:
            found, excess = _wait_recorded(url, acked)
            return RoundResult("kill", sent, len(acked), found, excess)
        again = ProxyProcess(workdir, url)
        try:
            found, excess = _wait_recorded(url, acked)
        finally:
            again.stop()
        return RoundResult("kill", sent, len(acked), found, excess)
    finally:
        if separate is not None:
            separate.stop()
        mock.stop()


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own under `root`, on a free loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root} -F",
                  "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


def outage_round(workdir: Path, outage_s: float, concurrency: int = 4, pace_s: float = 0.015) -> RoundResult:
    """Stop PostgreSQL under load, SIGTERM the proxy while it is down, bring both back, count."""
    workdir.mkdir(parents=True, exist_ok=True)
    # Outside workdir: the postgres user must reach it, whatever the permissions above workdir.
    pg = ThrowawayPostgres(Path(tempfile.mkdtemp(prefix="nexusai-pg-")))
    pg.start()
    mock = MockProcess(workdir, chunks=8)
    try:
        seed_database(pg.url, mock.url)
        proxy = ProxyProcess(workdir, pg.url)
        acked: list[str] = []
        stop = asyncio.Event()

        async def run() -> int:
            async def outage() -> None:
                await asyncio.sleep(2.0)
                await asyncio.to_thread(pg.stop, "immediate")
                await asyncio.sleep(outage_s)
                stop.set()
            task = asyncio.create_task(outage())
            sent = await _load(proxy.port, 10_000_000, concurrency, acked, stop, pace_s)
            await task
            return sent

        sent = asyncio.run(run())
        code = proxy.stop()  # SIGTERM with the database still down
        stderr = proxy.stderr_path.read_text(errors="replace")
        waiting = next((line for line in stderr.splitlines() if "waiting in the journal" in line), "")
        pg.start()
        again = ProxyProcess(workdir, pg.url)
        try:
            found, excess = _wait_recorded(pg.url, acked, timeout=120)
        finally:
            again.stop()
        result = RoundResult("outage", sent, len(acked), found, excess,
                             waiting_at_stop=f"exit {code}; " + waiting.split("] ", 1)[-1])
        return result
    finally:
        mock.stop()
        try:
            pg.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(pg.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("kill", "outage"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--database-url", default=None, help="kill mode: a database to use instead of SQLite")
    parser.add_argument("--recorder", choices=("thread", "process"), default="thread",
                        help="kill mode: USAGE_RECORDER (process: a recorder process, the proxy not restarted)")
    args = parser.parse_args(argv)
    results = []
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="nexusai-crash-") as tmp:
            workdir = Path(tmp)
            if args.mode == "kill":
                result = kill_round(workdir, args.database_url, args.requests, recorder=args.recorder)
            else:
                result = outage_round(workdir, args.outage_s)
        results.append(result)
        print(f"round {n + 1}: {result.mode}: sent {result.sent}, acknowledged {result.acknowledged}, "
              f"recorded {result.recorded}, lost {result.lost}, duplicates {result.duplicates}"
              + (f"; at SIGTERM: {result.waiting_at_stop}" if result.waiting_at_stop else ""), flush=True)
    bad = [r for r in results if r.lost or r.duplicates]
    print("verdict:", "OK (no acknowledged request lost, none recorded twice)" if not bad else "LOST ROWS")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
