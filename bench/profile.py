"""Profile the running proxy under load with py-spy (pip install -r bench/requirements.txt).

    python -m bench.profile --mode json --concurrency 16 --duration 10
    python -m bench.profile --mode stream --concurrency 1 --out /tmp/stream.txt

Starts the mock and the real proxy (pinned as in bench.run), samples the
proxy with `py-spy record --format raw` (collapsed stacks, every thread,
idle frames dropped) while the load generator runs, and prints the functions
with the most samples, inclusive and self.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/profile.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CLK_TCK,
    LOAD_CPU,
    PROXY_CPU,
    MockProcess,
    ProxyProcess,
    can_pin,
    cpu_seconds,
    pin_self,
    seed_database,
    simple_request,
)
from bench.loadgen import new_loop, run_load


def top(collapsed: Path, n: int = 30) -> str:
    """Inclusive and self sample counts per function from py-spy's raw output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        total += count
        frames = [f.split(" (", 1)[0] + " (" + f.rsplit("/", 1)[-1] if " (" in f else f for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    out = [f"{total} samples", "", "inclusive:"]
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(n)]
    out += ["", "self:"]
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n)]
    return "\n".join(out)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (utime + stime) of each thread of `pid`: "main" (the event loop) or "<comm>-<tid>"."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        label = "main" if task.name == str(pid) else f"{name}-{task.name}"
        out[label] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        out[label + ":sys"] = int(fields[12]) / CLK_TCK
    return out


def main(argv: list[str] | None = None) -> int:
    """Profile one load against the proxy."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("json", "stream", "embeddings"), default="json")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--chunk-delay-ms", type=float, default=1.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--archive", action="store_true")
    p.add_argument("--gil", action="store_true", help="only sample the thread holding the GIL")
    p.add_argument("--no-spy", action="store_true", help="skip py-spy: CPU per thread only")
    p.add_argument("--out", type=Path, help="keep the collapsed stacks here")
    a = p.parse_args(argv)
    pyspy = shutil.which("py-spy")
    if pyspy is None and not a.no_spy:
        print("py-spy not found: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2
    pinned = can_pin()
    with tempfile.TemporaryDirectory(prefix="nexusai-profile-") as tmp:
        workdir = Path(tmp)
        mock = MockProcess(workdir, chunks=a.chunks, chunk_delay_ms=a.chunk_delay_ms,
                           cpu=LOAD_CPU if pinned else None)
        proxy = None
        loop = new_loop()
        try:
            seed_database(f"sqlite:///{workdir / 'p.db'}", mock.url)
            proxy = ProxyProcess(workdir, f"sqlite:///{workdir / 'p.db'}",
                                 env={"ARCHIVE_MESSAGES": "1" if a.archive else "0"},
                                 cpu=PROXY_CPU if pinned else None)
            if pinned:
                pin_self(LOAD_CPU)
            req = simple_request(proxy.port, a.mode == "stream", a.chunks, a.mode)
            loop.run_until_complete(run_load("127.0.0.1", proxy.port, lambda _i: req, concurrency=a.concurrency,
                                             duration_s=1.0, max_requests=500))
            out = a.out or workdir / "stacks.txt"
            spy = None
            if not a.no_spy:
                spy = subprocess.Popen(
                    [pyspy, "record", "-p", str(proxy.pid), "--format", "raw", "-o", str(out), "-r", str(a.rate),
                     "--threads", *(["--gil"] if a.gil else []), "-d", str(int(a.duration) + 2)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                )
            time.sleep(1.0)
            cpu0 = cpu_seconds(proxy.pid)
            threads0 = thread_cpu(proxy.pid)
            result = loop.run_until_complete(run_load(
                "127.0.0.1", proxy.port, lambda _i: req, concurrency=a.concurrency, duration_s=a.duration,
                max_requests=10**9))
            time.sleep(0.8)  # deferred work (usage batches, log lines) lands in the window
            cpu1 = cpu_seconds(proxy.pid)
            threads1 = thread_cpu(proxy.pid)
            err = spy.communicate(timeout=60)[1] if spy is not None else b""
            print(f"{result.requests} requests, {result.errors} errors, {result.rps:.0f}/s, "
                  f"proxy CPU {1000 * (cpu1 - cpu0) / max(1, result.requests):.3f} ms/request "
                  "(py-spy's own cost included)")
            n = max(1, result.requests)
            print("per thread (ms/request): " + ", ".join(
                f"{name} {1000 * (threads1.get(name, 0.0) - threads0.get(name, 0.0)) / n:.3f}"
                for name in sorted(threads1, key=lambda k: threads0.get(k, 0.0) - threads1[k])))
            if spy is None:
                pass
            elif out.exists():
                print(top(out))
            else:
                print(err.decode(errors="replace"), file=sys.stderr)
        finally:
            if proxy is not None:
                proxy.stop()
            mock.stop()
            loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
