"""Direct-to-mock vs through-NexusAI, side by side, in one run.

    python -m bench.run                              # full run (~2 minutes)
    python -m bench.run --duration 2 --concurrency 1,16
    python -m bench.run --json results.json --markdown

For each mode (non-stream, 16-chunk stream) and each concurrency, the load
generator first hits the mock directly, then the same mock through the real
proxy (`python run.py proxy`); it prints latency percentiles, TTFB, RPS, the
overhead (Δp50, Δp99, ΔTTFB) and the proxy's CPU seconds per request. A last
pass restarts the proxy with ARCHIVE_MESSAGES=1. Every phase checks zero
errors and exactly one upstream request per client request (the mock
counts), and at the end one usage row per proxied request.
Pinning (when >= 2 CPUs): proxy on CPU 0; mock and load generator on CPU 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.harness import (
    CLIENT_KEY,
    LIMITED_KEY,
    LOAD_CPU,
    PROXY_CPU,
    ForeignCpu,
    MockProcess,
    ProxyProcess,
    RecorderProcess,
    RedisProcess,
    can_pin,
    cpu_seconds,
    git_commit,
    machine_info,
    pin_process,
    pin_self,
    rss_mb,
    seed_database,
    simple_request,
    tree_cpu_seconds,
    tree_pids,
    wait_quiet,
    wait_usage_rows,
    wait_workers,
)
from bench.loadgen import LoadResult, new_loop, run_load

SETTLE_S = 0.8
RECORDER_WORDS = {"thread": "a thread of the proxy", "process": "a process of its own (unpinned)"}
# At concurrency 1 the proxy can share the load's CPU without contention; this row shows the
# proxy's own latency without the two cross-CPU wake-ups per hop that pinning adds.
COLOCATED = "proxy 1-CPU"  # > the proxy's usage flush interval: its deferred work lands in the window


@dataclass
class Options:
    """What to run."""

    duration_s: float = 5.0
    max_requests: int = 200_000
    warmup: int = 300
    concurrencies: tuple[int, ...] = (1, 16, 64)
    modes: tuple[str, ...] = ("json", "stream")
    chunks: int = 16
    chunk_delay_ms: float = 1.0
    latency_ms: float = 0.0
    archive_concurrency: int | None = 16
    pin: bool = True
    colocated: bool = True  # also measure concurrency 1 with the proxy on the load's CPU
    quiet_wait_s: float = 60.0  # before each phase, wait this long at most for other processes to go quiet
    settle_s: float = SETTLE_S
    recorder: str = "thread"  # USAGE_RECORDER: "process" adds `run.py recorder`, unpinned
    workers: int = 1  # > 1: also 1 and N proxy workers (PROXY_WORKERS) side by side
    placement: str = "pinned"  # of that pass: workers one per CPU ("pinned") or all left to the kernel ("free")
    redis: bool = False  # also a limited key on the in-memory limiter and on Redis (REDIS_URL)


@dataclass
class Phase:
    """One measured load: direct or through the proxy."""

    mode: str
    concurrency: int
    target: str  # "direct", "proxy", "proxy 1-CPU" (on the load's CPU) or "proxy+archive"
    result: dict[str, Any]
    upstream_requests: int
    cpu_s: float | None = None
    recorder_cpu_s: float | None = None  # USAGE_RECORDER=process: the recorder process's CPU
    rss_mb: float | None = None
    foreign_cpu_pct: float = 0.0  # CPU other processes on the machine used meanwhile (% of one CPU)
    error_samples: list[str] = field(default_factory=list)

    @property
    def cpu_ms_per_request(self) -> float | None:
        """Proxy CPU milliseconds per response."""
        if self.cpu_s is None or not self.result["requests"]:
            return None
        return self.cpu_s * 1000.0 / self.result["requests"]

    @property
    def recorder_cpu_ms_per_request(self) -> float | None:
        """The recorder process's CPU milliseconds per response (USAGE_RECORDER=process)."""
        if self.recorder_cpu_s is None or not self.result["requests"]:
            return None
        return self.recorder_cpu_s * 1000.0 / self.result["requests"]


@dataclass
class Report:
    """Everything a run measured."""

    machine: dict[str, str]
    commit: str
    options: dict[str, Any]
    pinned: bool
    phases: list[Phase] = field(default_factory=list)
    usage_rows_expected: int = 0
    usage_rows_written: int = 0

    @property
    def ok(self) -> bool:
        """Zero errors, one upstream request per client request, one usage row per proxied request."""
        return (
            all(p.result["errors"] == 0 and p.upstream_requests == p.result["requests"] for p in self.phases)
            and self.usage_rows_written == self.usage_rows_expected
        )


class Bench:
    """Owns the processes of one run."""

    def __init__(self, opts: Options, workdir: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        self.pinned = opts.pin and can_pin()
        self.db_path = workdir / "bench.db"
        self.database_url = f"sqlite:///{self.db_path}"
        self.loop = new_loop()
        self.mock: MockProcess | None = None
        self.proxy: ProxyProcess | None = None
        self.recorder: RecorderProcess | None = None
        self.redis: RedisProcess | None = None
        self.proxied = 0  # client requests sent through any proxy, warm-ups included
        self.key = CLIENT_KEY

    def start(self, archive: bool = False, workers: int = 1, redis_url: str | None = None,
              pinned: bool = True) -> None:
        """Start the mock (once) and a proxy."""
        if self.mock is None:
            self.mock = MockProcess(self.workdir, latency_ms=self.opts.latency_ms, chunks=self.opts.chunks,
                                    chunk_delay_ms=self.opts.chunk_delay_ms,
                                    cpu=LOAD_CPU if self.pinned else None)
            seed_database(self.database_url, self.mock.url)
        env = {"ARCHIVE_MESSAGES": "1"} if archive else {}
        if workers > 1:
            env["PROXY_WORKERS"] = str(workers)
        if redis_url:
            env["REDIS_URL"] = redis_url
        separate = self.opts.recorder == "process"
        supervised = separate and workers > 1
        if separate:
            env["USAGE_RECORDER"] = "process"
            if supervised and self.recorder is not None:
                self.recorder.stop()  # run.py supervises a recorder of its own beside its workers
                self.recorder = None
            if self.recorder is None and not supervised:
                self.recorder = RecorderProcess(self.workdir, self.database_url)
        # With a recorder process, the proxy is started as run.py's child would be: alone, the
        # command would supervise a proxy and a recorder of its own. Several workers: run.py
        # supervises them and its recorder (the recorder's CPU then counts as the proxy's).
        self.proxy = ProxyProcess(self.workdir, self.database_url, env=env,
                                  cpu=PROXY_CPU if self.pinned and pinned else None,
                                  as_child=separate and not supervised)
        if workers > 1:
            wait_workers(self.workdir / f"proxy-{self.proxy.port}.stdout", workers)

    def stop_proxy(self) -> None:
        """Stop the proxy gracefully."""
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None

    def close(self) -> None:
        """Stop everything."""
        self.stop_proxy()
        if self.recorder is not None:
            self.recorder.stop()
            self.recorder = None
        if self.redis is not None:
            self.redis.stop()
        if self.mock is not None:
            self.mock.stop()
            self.loop.close()

    def load(self, port: int, mode: str, concurrency: int, count: int, duration: float) -> LoadResult:
        """One closed-loop run against `port`."""
        req = simple_request(port, mode == "stream", self.opts.chunks, mode, key=self.key)
        return self.loop.run_until_complete(run_load(
            "127.0.0.1", port, lambda _i: req, concurrency=concurrency, duration_s=duration, max_requests=count,
        ))

    def phase(self, mode: str, concurrency: int, target: str) -> Phase:
        """Warm up, then measure one phase; through the proxy, also its CPU and RSS."""
        assert self.mock is not None
        via_proxy = target != "direct"
        port = self.proxy.port if (via_proxy and self.proxy) else self.mock.port
        ours = [os.getpid(), self.mock.proc.pid] + (tree_pids(self.proxy.pid) if self.proxy else [])
        ours += [self.recorder.pid] if self.recorder else []
        ours += [self.redis.proc.pid] if self.redis else []
        if self.opts.quiet_wait_s > 0:
            wait_quiet(ours, timeout_s=self.opts.quiet_wait_s)
        warm = self.load(port, mode, concurrency, self.opts.warmup, 30.0)
        if via_proxy:
            self.proxied += warm.requests
            time.sleep(self.opts.settle_s)
        before_up = self.mock.chat_requests()
        pid = self.proxy.pid if (via_proxy and self.proxy) else None
        pids = tree_pids(pid) if pid else []  # PROXY_WORKERS > 1: run.py and its workers
        cpu0 = tree_cpu_seconds(pids)
        rec0 = cpu_seconds(self.recorder.pid) if (pid and self.recorder) else 0.0
        foreign = ForeignCpu(ours)
        result = self.load(port, mode, concurrency, self.opts.max_requests, self.opts.duration_s)
        foreign_pct = foreign.percent()
        if pid:
            # The usage writer runs at idle priority and catches up after a saturated phase:
            # its work belongs to this phase's CPU figure.
            wait_usage_rows(self.db_path, self.proxied + result.requests, timeout=60.0)
            time.sleep(self.opts.settle_s)
        cpu1 = tree_cpu_seconds(pids)
        rec1 = cpu_seconds(self.recorder.pid) if (pid and self.recorder) else 0.0
        upstream = self.mock.chat_requests() - before_up
        if via_proxy:
            self.proxied += result.requests
        return Phase(
            mode=mode, concurrency=concurrency, target=target, result=result.summary(),
            upstream_requests=upstream, cpu_s=(cpu1 - cpu0) if pid else None,
            recorder_cpu_s=(rec1 - rec0) if (pid and self.recorder) else None,
            rss_mb=rss_mb(pid) if pid else None, foreign_cpu_pct=round(foreign_pct, 1),
            error_samples=result.error_samples + warm.error_samples,
        )


def run_benchmark(opts: Options, progress: bool = True) -> Report:
    """Run every phase; the report (processes are always stopped)."""
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    report = Report(machine=machine_info(), commit=git_commit(), options=asdict(opts), pinned=False)
    with tempfile.TemporaryDirectory(prefix="nexusai-bench-") as tmp:
        bench = Bench(opts, Path(tmp))
        report.pinned = bench.pinned
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        try:
            bench.start()
            if bench.pinned:
                pin_self(LOAD_CPU)
            for mode in opts.modes:
                for c in opts.concurrencies:
                    targets = ["direct", "proxy"]
                    if c == 1 and bench.pinned and opts.colocated:
                        targets.append(COLOCATED)
                    for target in targets:
                        if target == COLOCATED:
                            assert bench.proxy is not None
                            pin_process(bench.proxy.pid, LOAD_CPU)
                        phase = bench.phase(mode, c, target)
                        if target == COLOCATED:
                            assert bench.proxy is not None
                            pin_process(bench.proxy.pid, PROXY_CPU)
                        report.phases.append(phase)
                        say(_progress_line(phase))
            if opts.archive_concurrency:
                bench.stop_proxy()
                bench.start(archive=True)
                for mode in opts.modes:
                    phase = bench.phase(mode, opts.archive_concurrency, "proxy+archive")
                    report.phases.append(phase)
                    say(_progress_line(phase))
            if opts.workers > 1:
                _workers_pass(bench, opts, report, say, affinity)
            if opts.redis:
                _redis_pass(bench, opts, report, say)
            bench.stop_proxy()  # graceful: every queued usage row is flushed
            report.usage_rows_expected = bench.proxied
            report.usage_rows_written = wait_usage_rows(bench.db_path, bench.proxied)
        finally:
            bench.close()
            if affinity is not None:
                os.sched_setaffinity(0, affinity)
    return report


def _workers_pass(bench: Bench, opts: Options, report: Report, say: Any, affinity: set[int] | None) -> None:
    """1 worker, then PROXY_WORKERS=N, at the highest concurrency, placed as `opts.placement` says.

    `pinned`: worker i on CPU (i - 1) mod CPUs (so 1 worker is on CPU 0, as the main phases),
    the mock and the load generator where the main phases put them (CPU 1). `free`: nothing
    pinned, the kernel places every process and thread.
    """
    assert bench.mock is not None
    every = affinity or set(range(os.cpu_count() or 1))
    free = opts.placement == "free" or not bench.pinned
    if free:
        os.sched_setaffinity(0, every)
        pin_process_to(bench.mock.proc.pid, every)
    c = max(opts.concurrencies)
    try:
        for workers in (1, opts.workers):
            bench.stop_proxy()
            bench.start(workers=workers, pinned=False)
            assert bench.proxy is not None
            if not free:
                children = tree_pids(bench.proxy.pid)[1:] if workers > 1 else [bench.proxy.pid]
                children = [pid for pid in children if b" recorder" not in _cmdline(pid)]
                cpus = sorted(every)
                for i, pid in enumerate(children):
                    pin_process_to(pid, {cpus[i % len(cpus)]})
            for mode in opts.modes:
                label = f"{workers} worker{'s' if workers > 1 else ''} ({'free' if free else 'pinned'})"
                phase = bench.phase(mode, c, label)
                report.phases.append(phase)
                say(_progress_line(phase))
    finally:
        if bench.pinned and free:
            pin_self(LOAD_CPU)
            pin_process_to(bench.mock.proc.pid, {LOAD_CPU})


def _redis_pass(bench: Bench, opts: Options, report: Report, say: Any) -> None:
    """A key under every limit, on the in-memory limiter and then on Redis, pinned as the main phases."""
    if not shutil.which("redis-server"):
        raise SystemExit("--redis needs redis-server (apt-get install -y redis-server)")
    bench.redis = RedisProcess(bench.workdir, cpu=LOAD_CPU if bench.pinned else None)
    bench.key = LIMITED_KEY
    c = max(opts.concurrencies)
    try:
        for target, url in (("limited", None), ("limited+redis", bench.redis.url)):
            bench.stop_proxy()
            bench.start(redis_url=url)
            for mode in opts.modes:
                phase = bench.phase(mode, c, target)
                report.phases.append(phase)
                say(_progress_line(phase))
    finally:
        bench.key = CLIENT_KEY


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def pin_process_to(pid: int, cpus: set[int]) -> None:
    """Move every thread of a running process onto these CPUs."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            pass


def _progress_line(p: Phase) -> str:
    r = p.result
    cpu = f" cpu/req={p.cpu_ms_per_request:.3f}ms" if p.cpu_ms_per_request is not None else ""
    if p.recorder_cpu_ms_per_request is not None:
        cpu += f" recorder/req={p.recorder_cpu_ms_per_request:.3f}ms"
    return (f"{p.mode:6} c={p.concurrency:<3} {p.target:14} n={r['requests']:<6} err={r['errors']} "
            f"up={p.upstream_requests} rps={r['rps']:.0f} p50={r['p50_ms']:.3f} p99={r['p99_ms']:.3f} "
            f"ttfb50={r['ttfb_p50_ms']:.3f}{cpu} others={p.foreign_cpu_pct:.0f}%")


# --- output -----------------------------------------------------------------


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(report: Report) -> str:
    """The report as Markdown tables."""
    m = report.machine
    o = report.options
    lines = [
        f"Commit `{report.commit}`; {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}; "
        f"pinned: {'proxy on CPU 0, mock + load generator on CPU 1' if report.pinned else 'no'}; "
        f"{o['duration_s']:g} s per phase after {o['warmup']} warm-up requests; mock latency "
        f"{o['latency_ms']:g} ms, streams of {o['chunks']} content chunks {o['chunk_delay_ms']:g} ms apart; "
        f"usage recorder: {RECORDER_WORDS[o.get('recorder', 'thread')]}.",
        "",
        "Overhead (proxy minus direct, same load; ms):",
        "",
        "| mode | conc | proxy placement | direct p50 | proxy p50 | Δp50 | direct p99 | proxy p99 | Δp99 | ΔTTFB p50 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(p.mode, p.concurrency, p.target): p for p in report.phases}
    for p in report.phases:
        if p.target not in ("proxy", COLOCATED):
            continue
        d = by_key.get((p.mode, p.concurrency, "direct"))
        if d is None:
            continue
        dr, pr = d.result, p.result
        lines.append(
            f"| {p.mode} | {p.concurrency} | {'CPU 1, with the load' if p.target == COLOCATED else 'CPU 0'} | "
            f"{_f(dr['p50_ms'])} | {_f(pr['p50_ms'])} | "
            f"{_f(pr['p50_ms'] - dr['p50_ms'])} | {_f(dr['p99_ms'])} | {_f(pr['p99_ms'])} | "
            f"{_f(pr['p99_ms'] - dr['p99_ms'])} | {_f(pr['ttfb_p50_ms'] - dr['ttfb_p50_ms'])} |"
        )
    lines += [
        "",
        "Throughput and proxy cost:",
        "",
        "| mode | conc | target | requests | errors | upstream/client | RPS | p50 | p90 | p99 | TTFB p50 | "
        "proxy CPU ms/req | recorder process CPU ms/req | proxy CPU busy | proxy RSS MiB | other processes' CPU |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.phases:
        r = p.result
        ratio = p.upstream_requests / r["requests"] if r["requests"] else float("nan")
        busy = None
        if p.cpu_s is not None and r["rps"]:
            busy = 100.0 * p.cpu_s / (r["requests"] / r["rps"])
        lines.append(
            f"| {p.mode} | {p.concurrency} | {p.target} | {r['requests']} | {r['errors']} | {ratio:.3f} | "
            f"{r['rps']:.0f} | {_f(r['p50_ms'])} | {_f(r['p90_ms'])} | {_f(r['p99_ms'])} | "
            f"{_f(r['ttfb_p50_ms'])} | {_f(p.cpu_ms_per_request)} | {_f(p.recorder_cpu_ms_per_request)} | "
            f"{'–' if busy is None else f'{busy:.0f}%'} | {_f(p.rss_mb, 1)} | {p.foreign_cpu_pct:.0f}% |"
        )
    best: dict[str, tuple[float, float | None]] = {}
    for p in report.phases:
        if p.target == "proxy":
            rps, cpu = best.get(p.mode, (0.0, None))
            cpus = [q.cpu_ms_per_request for q in report.phases
                    if q.mode == p.mode and q.target == "proxy" and q.concurrency > 1 and q.cpu_ms_per_request]
            best[p.mode] = (max(rps, p.result["rps"]), min(cpus) if cpus else p.cpu_ms_per_request)
    lines += ["", "| mode | max RPS through the proxy | best proxy CPU ms/req | CPU-bound capacity (1 / CPU per req) |",
              "|---|---:|---:|---:|"]
    for mode, (rps, cpu) in best.items():
        cap = f"{1000.0 / cpu:.0f}/s" if cpu else "–"
        lines.append(f"| {mode} | {rps:.0f} | {_f(cpu)} | {cap} |")
    lines += [
        "",
        f"Usage rows: {report.usage_rows_written} written for {report.usage_rows_expected} proxied requests. "
        f"Verdict: {'OK (zero errors, one upstream request per client request)' if report.ok else 'FAILED'}.",
    ]
    samples = [s for p in report.phases for s in p.error_samples]
    if samples:
        lines += ["", "Error samples:"] + [f"- {s}" for s in samples[:10]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds per measured phase")
    p.add_argument("--max-requests", type=int, default=d.max_requests, help="cap per measured phase")
    p.add_argument("--warmup", type=int, default=d.warmup, help="warm-up requests before each phase")
    p.add_argument("--concurrency", default=",".join(map(str, d.concurrencies)))
    p.add_argument("--modes", default=",".join(d.modes), help="any of json,stream,embeddings,responses,responses-chat,"
                                                     "messages,messages-chat")
    p.add_argument("--chunks", type=int, default=d.chunks, help="content chunks per stream")
    p.add_argument("--chunk-delay-ms", type=float, default=d.chunk_delay_ms)
    p.add_argument("--latency-ms", type=float, default=d.latency_ms, help="mock delay before headers")
    p.add_argument("--archive-concurrency", type=int, default=d.archive_concurrency,
                   help="concurrency of the ARCHIVE_MESSAGES=1 pass (0: skip it)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--no-colocated", action="store_true",
                   help="skip the concurrency-1 pass with the proxy on the load's CPU")
    p.add_argument("--quiet-wait", type=float, default=d.quiet_wait_s,
                   help="before each phase, wait up to this many seconds for other processes to go quiet")
    p.add_argument("--recorder", choices=("thread", "process"), default=d.recorder,
                   help="USAGE_RECORDER of the proxy: its own thread, or a recorder process")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="> 1: also 1 and N proxy workers (PROXY_WORKERS) at the highest concurrency")
    p.add_argument("--placement", choices=("pinned", "free"), default=d.placement,
                   help="--workers pass: worker i on CPU i-1 (mock and load where the main phases put them), "
                        "or nothing pinned")
    p.add_argument("--redis", action="store_true",
                   help="also a limited key on the in-memory limiter and on a throwaway redis-server")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables (default: also)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; exit 1 unless zero errors and 1:1 upstream calls."""
    a = parse_args(argv)
    opts = Options(
        duration_s=a.duration, max_requests=a.max_requests, warmup=a.warmup,
        concurrencies=tuple(int(c) for c in a.concurrency.split(",") if c),
        modes=tuple(m for m in a.modes.split(",") if m), chunks=a.chunks, chunk_delay_ms=a.chunk_delay_ms,
        latency_ms=a.latency_ms, archive_concurrency=a.archive_concurrency or None, pin=not a.no_pin,
        colocated=not a.no_colocated, quiet_wait_s=a.quiet_wait, recorder=a.recorder,
        workers=a.workers, placement=a.placement, redis=a.redis,
    )
    report = run_benchmark(opts)
    print(markdown(report))
    if a.json:
        a.json.write_bytes(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
