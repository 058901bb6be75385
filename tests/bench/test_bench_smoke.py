"""The benchmark harness works end to end with tiny counts (no timings are asserted)."""

from __future__ import annotations

from bench.run import Options, run_benchmark
from bench.soak import run_soak


def test_benchmark_runs_clean_through_the_real_proxy() -> None:
    opts = Options(duration_s=0.3, max_requests=40, warmup=5, concurrencies=(1, 4), chunks=4,
                   chunk_delay_ms=0.0, archive_concurrency=2, settle_s=0.05,
                   quiet_wait_s=0.0)
    report = run_benchmark(opts, progress=False)
    targets = {(p.mode, p.concurrency, p.target) for p in report.phases}
    assert ("stream", 4, "proxy") in targets and ("json", 2, "proxy+archive") in targets
    for phase in report.phases:
        assert phase.result["requests"] > 0, phase
        assert phase.result["errors"] == 0, phase.error_samples
        assert phase.upstream_requests == phase.result["requests"], phase
        if phase.target != "direct":
            assert phase.cpu_s is not None and phase.rss_mb
    assert report.usage_rows_written == report.usage_rows_expected > 0
    assert report.ok


def test_soak_runs_the_whole_mix() -> None:
    report = run_soak(requests=80, concurrency=4, sample_s=0.05, chunks=3, progress=False)
    assert report.requests == 80
    assert report.errors == 0, report.error_samples
    assert report.upstream_requests == report.usage_rows == 80
    assert report.samples and report.steady_rss_mb > 0


def test_benchmark_workers_and_redis_passes_run_clean(redis_server: object) -> None:
    opts = Options(duration_s=0.3, max_requests=40, warmup=5, concurrencies=(4,), modes=("json",), chunks=4,
                   chunk_delay_ms=0.0, archive_concurrency=None, settle_s=0.05, quiet_wait_s=0.0, colocated=False,
                   workers=2, redis=True)
    report = run_benchmark(opts, progress=False)
    placed = "pinned" if report.pinned else "free"
    assert [p.target for p in report.phases if p.target != "direct" and p.target != "proxy"] == [
        f"1 worker ({placed})", f"2 workers ({placed})", "limited", "limited+redis"]
    for phase in report.phases:
        assert phase.result["requests"] > 0 and phase.result["errors"] == 0, phase.error_samples
    assert report.ok
