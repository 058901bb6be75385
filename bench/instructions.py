"""CPU per request as instructions, not seconds: the proxy under callgrind, two loads, the difference.

    python -m bench.instructions                                # json and stream, 300 and 1,200 requests
    python -m bench.instructions --modes json,embeddings --small 500 --large 2000 --concurrency 16

Seconds per request move with whatever else a shared machine does; instruction counts do
not. For each mode the proxy (`python run.py proxy`, SQLite, the mock upstream on loopback)
runs twice under `valgrind --tool=callgrind`, once serving `small` requests and once
`large`, after the same warm-up; the difference of the two totals over the difference of
the requests is what one request costs, start-up and shutdown cancelled out. Every thread
counts, so the usage recorder's database writes and the log writer are in the figure.
Needs valgrind (Debian: `apt-get install valgrind`).
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

from bench.harness import MockProcess, ProxyProcess, git_commit, seed_database, simple_request
from bench.loadgen import new_loop, run_load

COLLECTED = re.compile(rb"Collected : (\d+)")
WARMUP = 50
CHUNKS = 16


def _total(mode: str, requests: int, concurrency: int) -> int:
    """Instructions the proxy executed, start to exit, serving WARMUP + `requests` requests."""
    with tempfile.TemporaryDirectory(prefix="nexusai-instr-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'bench.db'}"
        mock = MockProcess(workdir, chunks=CHUNKS, chunk_delay_ms=0.0)
        loop = new_loop()
        try:
            seed_database(url, mock.url)
            wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir / 'callgrind.out'}"]
            proxy = ProxyProcess(workdir, url, as_child=True, wrapper=wrapper, start_timeout_s=600)
            request = simple_request(proxy.port, mode == "stream", CHUNKS, mode)
            for count in (WARMUP, requests):
                result = loop.run_until_complete(run_load(
                    "127.0.0.1", proxy.port, lambda _i: request, concurrency=concurrency,
                    duration_s=3600, max_requests=count,
                ))
                if result.errors or result.requests != count:
                    raise RuntimeError(f"{mode}: {result.errors} errors in {result.requests} requests")
            proxy.proc.send_signal(signal.SIGTERM)
            proxy.proc.wait(600)
            match = COLLECTED.search(proxy.stderr_path.read_bytes())
            if match is None:
                raise RuntimeError(f"no callgrind total in {proxy.stderr_path}")
            return int(match.group(1))
        finally:
            loop.close()
            mock.stop()


def measure(mode: str, small: int, large: int, concurrency: int) -> float:
    """Instructions per request in `mode`."""
    low = _total(mode, small, concurrency)
    high = _total(mode, large, concurrency)
    return (high - low) / (large - small)


def main(argv: list[str] | None = None) -> int:
    """Print instructions per request for each mode."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="json,stream")
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("bench.instructions needs valgrind", file=sys.stderr)
        return 2
    print(f"commit {git_commit()}; callgrind; {args.small} and {args.large} requests at concurrency "
          f"{args.concurrency} after {WARMUP} warm-up; streams of {CHUNKS} chunks", flush=True)
    for mode in (m for m in args.modes.split(",") if m):
        per_request = measure(mode, args.small, args.large, args.concurrency)
        print(f"{mode:6} {per_request / 1e6:8.3f} M instructions per request", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
