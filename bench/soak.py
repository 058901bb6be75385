"""Memory soak: many mixed requests through one proxy process, RSS sampled from /proc.

    python -m bench.soak                      # 200,000 requests (a few minutes)
    python -m bench.soak --requests 20000     # a quick run

The mix cycles through eight kinds: JSON and SSE, with and without upstream
usage (without it the proxy counts tokens with tiktoken), with the usage
chunk asked for or not, with fresh conversation ids in the header and body,
and a ~2 KB prompt. RSS is sampled every `--sample-s`; steady-state RSS is
the median after the first 10% of requests (warm-up), growth the difference
between the mean of the last 10% of samples and of the samples around the
10% mark. Exits 1 on any error, on upstream calls != client calls, or on a
missing usage row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/soak.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    LOAD_CPU,
    MODEL,
    MODEL_NOUSAGE,
    PROXY_CPU,
    ForeignCpu,
    MockProcess,
    ProxyProcess,
    can_pin,
    chat_request,
    cpu_seconds,
    git_commit,
    json_validator,
    machine_info,
    pin_self,
    rss_mb,
    seed_database,
    stream_validator,
    wait_usage_rows,
)
from bench.loadgen import Request, new_loop, run_load

LONG_PROMPT = "Summarise the following notes in one line. " + "The quick brown fox jumps over the lazy dog. " * 45
WARMUP_FRACTION = 0.1


@dataclass
class SoakReport:
    """What the soak measured."""

    requests: int
    errors: int
    upstream_requests: int
    usage_rows: int
    wall_s: float
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (t, requests done, RSS MiB)
    error_samples: list[str] = field(default_factory=list)
    foreign_cpu_pct: float = 0.0  # CPU other processes used meanwhile (% of one CPU)
    proxy_cpu_s: float = 0.0

    def _after_warmup(self) -> list[tuple[float, int, float]]:
        cut = self.requests * WARMUP_FRACTION
        return [s for s in self.samples if s[1] >= cut] or self.samples

    @property
    def steady_rss_mb(self) -> float:
        """Median RSS after warm-up."""
        return statistics.median(s[2] for s in self._after_warmup())

    @property
    def peak_rss_mb(self) -> float:
        """Highest RSS seen."""
        return max(s[2] for s in self.samples)

    @property
    def growth_mb(self) -> float:
        """Mean RSS of the last 10% of samples minus that of the first 10% after warm-up."""
        steady = self._after_warmup()
        n = max(1, len(steady) // 10)
        return statistics.fmean(s[2] for s in steady[-n:]) - statistics.fmean(s[2] for s in steady[:n])

    @property
    def ok(self) -> bool:
        """Zero errors, one upstream call and one usage row per client request."""
        return self.errors == 0 and self.upstream_requests == self.requests == self.usage_rows


def mixed_request(port: int, chunks: int) -> object:
    """A factory of the eight request kinds, by request index."""
    json_check = json_validator
    plain = stream_validator(chunks, False)
    with_usage = stream_validator(chunks, True)
    fixed = [
        Request(chat_request(port, stream=False), json_check),
        Request(chat_request(port, stream=True), plain),
        None,
        None,
        Request(chat_request(port, stream=True, model=MODEL_NOUSAGE), plain),
        Request(chat_request(port, stream=False, content=LONG_PROMPT), json_check),
        None,
        None,
    ]

    def make(i: int) -> Request:
        kind = i % 8
        req = fixed[kind]
        if req is not None:
            return req
        conv = f"soak-{i}"
        if kind == 2:
            return Request(chat_request(port, stream=True, include_usage=True, conversation=conv), with_usage)
        if kind == 3:
            return Request(chat_request(port, stream=False, model=MODEL_NOUSAGE, conversation=conv), json_check)
        if kind == 6:
            return Request(chat_request(port, stream=True, conversation=conv), plain)
        # kind 7: conversation id in the body (the proxy strips it before forwarding)
        data = chat_request(port, stream=False, model=MODEL)
        head, _, body = data.partition(b"\r\n\r\n")
        body = body[:-1] + f',"conversation_id":"{conv}"}}'.encode()
        head = head.rsplit(b"Content-Length: ", 1)[0] + f"Content-Length: {len(body)}".encode()
        return Request(head + b"\r\n\r\n" + body, json_check)

    return make


def run_soak(requests: int, concurrency: int = 16, sample_s: float = 1.0, chunks: int = 16,
             archive: bool = False, pin: bool = True, progress: bool = True, as_child: bool = False) -> SoakReport:
    """Run the soak; processes are always stopped."""
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    pinned = pin and can_pin()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with tempfile.TemporaryDirectory(prefix="nexusai-soak-") as tmp:
        workdir = Path(tmp)
        db_path = workdir / "soak.db"
        mock = MockProcess(workdir, chunks=chunks, cpu=LOAD_CPU if pinned else None)
        proxy: ProxyProcess | None = None
        loop = new_loop()
        try:
            seed_database(f"sqlite:///{db_path}", mock.url)
            proxy = ProxyProcess(workdir, f"sqlite:///{db_path}", env={"ARCHIVE_MESSAGES": "1" if archive else "0"},
                                 cpu=PROXY_CPU if pinned else None, as_child=as_child)
            if pinned:
                pin_self(LOAD_CPU)
            pid = proxy.pid
            samples: list[tuple[float, int, float]] = []
            done = 0
            started = time.perf_counter()
            samples.append((0.0, 0, rss_mb(pid)))

            def on_progress(n: int) -> None:
                nonlocal done
                done = n

            async def sampler(stop: asyncio.Event) -> None:
                last_say = 0.0
                while not stop.is_set():
                    try:
                        await asyncio.wait_for(stop.wait(), sample_s)
                    except asyncio.TimeoutError:
                        pass
                    t = time.perf_counter() - started
                    samples.append((t, done, rss_mb(pid)))
                    if t - last_say >= 10:
                        last_say = t
                        say(f"soak: {done}/{requests} requests, {t:.0f} s, RSS {samples[-1][2]:.1f} MiB")

            async def soak() -> object:
                stop = asyncio.Event()
                sampling = asyncio.ensure_future(sampler(stop))
                try:
                    return await run_load("127.0.0.1", proxy.port, mixed_request(proxy.port, chunks),
                                          concurrency=concurrency, duration_s=3600.0, max_requests=requests,
                                          on_progress=on_progress)
                finally:
                    stop.set()
                    await sampling

            before = mock.chat_requests()
            foreign = ForeignCpu([os.getpid(), mock.proc.pid, pid])
            cpu0 = cpu_seconds(pid)
            result = loop.run_until_complete(soak())
            proxy_cpu = cpu_seconds(pid) - cpu0
            foreign_pct = foreign.percent()
            upstream = mock.chat_requests() - before
            wall = time.perf_counter() - started
            samples.append((wall, result.requests, rss_mb(pid)))  # type: ignore[attr-defined]
            proxy.stop()
            proxy = None
            rows = wait_usage_rows(db_path, result.requests)  # type: ignore[attr-defined]
            return SoakReport(
                requests=result.requests, errors=result.errors, upstream_requests=upstream,  # type: ignore[attr-defined]
                usage_rows=rows, wall_s=wall, samples=samples, error_samples=result.error_samples,  # type: ignore[attr-defined]
                foreign_cpu_pct=foreign_pct, proxy_cpu_s=proxy_cpu,
            )
        finally:
            if proxy is not None:
                proxy.stop()
            mock.stop()
            loop.close()
            if affinity is not None:
                os.sched_setaffinity(0, affinity)


def describe(report: SoakReport, concurrency: int, archive: bool, as_child: bool = False) -> str:
    """The soak's result as Markdown."""
    m = machine_info()
    started = ("as `python run.py` starts it (migrations already applied)" if as_child
               else "standalone (`python run.py proxy`)")
    lines = [
        f"Commit `{git_commit()}`; {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}; "
        f"concurrency {concurrency}, archive {'on' if archive else 'off'}, proxy started "
        f"{started}.",
        "",
        "| requests | errors | upstream/client | usage rows | wall s | req/s | proxy CPU ms/req | RSS start MiB "
        "| steady RSS MiB | peak RSS MiB | growth MiB | other processes' CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {report.requests} | {report.errors} | "
        f"{report.upstream_requests / report.requests if report.requests else float('nan'):.3f} | "
        f"{report.usage_rows} | {report.wall_s:.0f} | {report.requests / report.wall_s:.0f} | "
        f"{1000 * report.proxy_cpu_s / max(1, report.requests):.3f} | "
        f"{report.samples[0][2]:.1f} | {report.steady_rss_mb:.1f} | {report.peak_rss_mb:.1f} | "
        f"{report.growth_mb:+.1f} | {report.foreign_cpu_pct:.0f}% |",
        "",
        "RSS by requests done: " + ", ".join(
            f"{n // 1000}k: {rss:.1f}" for _, n, rss in _spread(report.samples, 11)
        ) + " (MiB)",
        "",
        f"Verdict: {'OK' if report.ok else 'FAILED'}.",
    ]
    if report.error_samples:
        lines += ["", "Error samples:"] + [f"- {s}" for s in report.error_samples]
    return "\n".join(lines)


def _spread(samples: list[tuple[float, int, float]], k: int) -> list[tuple[float, int, float]]:
    if len(samples) <= k:
        return samples
    return [samples[round(i * (len(samples) - 1) / (k - 1))] for i in range(k)]


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print the report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling period")
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--archive", action="store_true", help="run the proxy with ARCHIVE_MESSAGES=1")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--as-child", action="store_true",
                   help="start the proxy as `python run.py` starts its child (no migration step)")
    a = p.parse_args(argv)
    report = run_soak(a.requests, a.concurrency, a.sample_s, a.chunks, a.archive, not a.no_pin, as_child=a.as_child)
    print(describe(report, a.concurrency, a.archive, a.as_child))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
