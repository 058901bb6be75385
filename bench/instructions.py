"""CPU per request as instructions, not seconds: the proxy under callgrind, two loads, the difference.

    python -m bench.instructions                                # json and stream, 300 and 1,200 requests
    python -m bench.instructions --modes json,embeddings --small 500 --large 2000 --concurrency 16
    python -m bench.instructions --modes json --workers 2       # PROXY_WORKERS=2: run.py and both workers
    python -m bench.instructions --modes json --limited [--redis]  # a key under every limit, [on Redis]

Seconds per request move with whatever else a shared machine does; instruction counts do
not. For each mode the proxy (`python run.py proxy`, SQLite, the mock upstream on loopback)
runs twice under `valgrind --tool=callgrind`, once serving `small` requests and once
`large`, after the same warm-up; the difference of the two totals over the difference of
the requests is what one request costs, start-up and shutdown cancelled out. Every thread
counts, so the usage recorder's database writes and the log writer are in the figure.
Needs valgrind (Debian: `apt-get install valgrind`). With `--workers N` the proxy is
`PROXY_WORKERS=N python run.py proxy` under `--trace-children=yes`: the supervisor and every
worker are counted (the kernel spreads the load's connections over the workers).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # `python bench/instructions.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CLIENT_KEY,
    LIMITED_KEY,
    MockProcess,
    ProxyProcess,
    RedisProcess,
    git_commit,
    seed_database,
    simple_request,
    wait_workers,
)
from bench.loadgen import new_loop, run_load

COLLECTED = re.compile(rb"Collected : (\d+)")
WARMUP = 50
CHUNKS = 16


def _total(mode: str, requests: int, concurrency: int, workers: int = 1, limited: bool = False,
           redis: bool = False) -> int:
    """Instructions the proxy executed, start to exit, serving WARMUP + `requests` requests."""
    with tempfile.TemporaryDirectory(prefix="nexusai-instr-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'bench.db'}"
        mock = MockProcess(workdir, chunks=CHUNKS, chunk_delay_ms=0.0)
        server = RedisProcess(workdir) if redis else None
        loop = new_loop()
        try:
            seed_database(url, mock.url)
            wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir / 'callgrind.out.%p'}"]
            env = {"REDIS_URL": server.url} if server is not None else {}
            if workers > 1:
                wrapper.insert(2, "--trace-children=yes")
                env["PROXY_WORKERS"] = str(workers)
            proxy = ProxyProcess(workdir, url, as_child=workers == 1, wrapper=wrapper, start_timeout_s=600, env=env)
            if workers > 1:
                wait_workers(workdir / f"proxy-{proxy.port}.stdout", workers, timeout_s=600)
            request = simple_request(proxy.port, mode == "stream", CHUNKS, mode,
                                     key=LIMITED_KEY if limited else CLIENT_KEY)
            for count in (WARMUP, requests):
                result = loop.run_until_complete(run_load(
                    "127.0.0.1", proxy.port, lambda _i: request, concurrency=concurrency,
                    duration_s=3600, max_requests=count,
                ))
                if result.errors or result.requests != count:
                    raise RuntimeError(f"{mode}: {result.errors} errors in {result.requests} requests")
            proxy.proc.send_signal(signal.SIGTERM)
            proxy.proc.wait(600)
            totals = [int(m) for m in COLLECTED.findall(proxy.stderr_path.read_bytes())]
            if len(totals) < (1 if workers == 1 else workers + 1):
                raise RuntimeError(f"callgrind totals missing in {proxy.stderr_path}")
            return sum(totals)  # every traced process: run.py, its migration child, the workers
        finally:
            loop.close()
            mock.stop()
            if server is not None:
                server.stop()


def measure(mode: str, small: int, large: int, concurrency: int, workers: int = 1, limited: bool = False,
            redis: bool = False) -> float:
    """Instructions per request in `mode`."""
    low = _total(mode, small, concurrency, workers, limited, redis)
    high = _total(mode, large, concurrency, workers, limited, redis)
    return (high - low) / (large - small)


def main(argv: list[str] | None = None) -> int:
    """Print instructions per request for each mode."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="json,stream")
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="PROXY_WORKERS (> 1: run.py supervising them)")
    parser.add_argument("--limited", action="store_true", help="requests of a key under every limit")
    parser.add_argument("--redis", action="store_true", help="REDIS_URL: a throwaway redis-server (unmeasured)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("bench.instructions needs valgrind", file=sys.stderr)
        return 2
    print(f"commit {git_commit()}; callgrind; {args.small} and {args.large} requests at concurrency "
          f"{args.concurrency} after {WARMUP} warm-up; streams of {CHUNKS} chunks; {args.workers} worker(s)"
          f"{'; limited key' if args.limited else ''}{'; REDIS_URL' if args.redis else ''}",
          flush=True)
    for mode in (m for m in args.modes.split(",") if m):
        per_request = measure(mode, args.small, args.large, args.concurrency, args.workers, args.limited, args.redis)
        print(f"{mode:6} {per_request / 1e6:8.3f} M instructions per request", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
