"""Prometheus metrics of the proxy: an outcome sink for per-request figures, a refresher for the rest.

Per request (the sink, on the loop): requests by api/model/provider/status, duration and
time-to-first-token histograms, tokens by kind, cost, failovers. These are plain Python
sums in one cell per (api, model, provider, status), exposed by a collector of ours at
scrape time: prometheus_client's own counters and histograms cost 47 K instructions per
request for these updates (locks, label lookups, a linear bucket search), about 4.6% of a
whole JSON request, against an issue budget of 5% for everything it added; the cells
cost a few thousand (docs/benchmarks.md). prometheus_client still builds the exposition
and keeps the gauges. Everything else (requests in flight, upstream attempts by result,
circuit states, limiter refusals, the usage writer's backlog and lag, the config
snapshot's age) is state the proxy keeps anyway; `refresh` copies it in once a second
and before each scrape.

Labels are bounded: APIs, configured models and providers, status codes, fixed kinds.
Several workers behind one port (PROXY_WORKERS) each publish their figures to a file
once a second; the one answering a scrape adds them up (see ProxyMetrics).
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from proxy_app.exchange.outcome import Outcome

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_KINDS = ("prompt", "completion", "cached", "cache_write", "reasoning")
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}
PEER_STALE_S = 30.0  # a worker's figures older than this are a gone worker's
# The `_created` series would double the exposition for a timestamp nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Cell:
    """Sums of the requests of one (api, model, provider, status)."""

    __slots__ = ("requests", "tokens", "cost", "failovers", "duration", "duration_sum", "ttft", "ttft_sum")

    def __init__(self) -> None:
        self.requests = 0
        self.tokens = [0, 0, 0, 0, 0]  # as TOKEN_KINDS
        self.cost = 0.0
        self.failovers = 0
        self.duration = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket (not cumulative); the last is +Inf
        self.duration_sum = 0.0
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0

    def add(self, other: _Cell) -> None:
        """Add another cell's sums to this one's."""
        self.requests += other.requests
        self.tokens = [a + b for a, b in zip(self.tokens, other.tokens, strict=True)]
        self.cost += other.cost
        self.failovers += other.failovers
        self.duration = [a + b for a, b in zip(self.duration, other.duration, strict=True)]
        self.duration_sum += other.duration_sum
        self.ttft = [a + b for a, b in zip(self.ttft, other.ttft, strict=True)]
        self.ttft_sum += other.ttft_sum


def _buckets(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(bounds, counts, strict=False):  # counts[-1] is +Inf's
        running += count
        out.append((repr(float(bound)), running))
    out.append(("+Inf", running + counts[-1]))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _RequestFamilies:
    """The collector exposing the cells as Prometheus families."""

    def __init__(self, cells: Callable[[], dict[tuple[str, str, str, int], _Cell]]) -> None:
        self._cells = cells

    def collect(self) -> Iterator[Metric]:
        """The per-request families, summed over statuses where a family has no status label."""
        labels = ["api", "model", "provider"]
        requests = CounterMetricFamily("nexusai_requests", "Requests answered, by client API, model, provider "
                                       "and status.", labels=[*labels, "status"])
        tokens = CounterMetricFamily("nexusai_tokens", "Tokens recorded; cached and cache_write are parts of "
                                     "prompt, reasoning of completion.", labels=[*labels, "kind"])
        cost = CounterMetricFamily("nexusai_cost_usd", "Cost recorded, in USD.", labels=labels)
        failovers = CounterMetricFamily("nexusai_failovers", "Upstream attempts beyond the first one of a "
                                        "request.", labels=["api", "model"])
        duration = HistogramMetricFamily("nexusai_request_duration_seconds", "Time from the request to the end "
                                         "of its reply.", labels=labels)
        ttft = HistogramMetricFamily("nexusai_time_to_first_token_seconds", "Time from the request to the "
                                     "upstream's first stream event (or whole reply).", labels=labels)
        merged: dict[tuple[str, str, str], _Cell] = {}
        by_model: Tally[tuple[str, str]] = Tally()
        for (api, model, provider, status), cell in self._cells().items():
            requests.add_metric([api, model, provider, str(status)], cell.requests)
            total = merged.get((api, model, provider))
            if total is None:
                total = merged[(api, model, provider)] = _Cell()
            total.add(cell)
            by_model[(api, model)] += cell.failovers
        for key, total in merged.items():
            values = list(key)
            for kind, count in zip(TOKEN_KINDS, total.tokens, strict=True):
                tokens.add_metric([*values, kind], count)
            cost.add_metric(values, total.cost)
            duration.add_metric(values, _buckets(total.duration, DURATION_BUCKETS), total.duration_sum)
            ttft.add_metric(values, _buckets(total.ttft, TTFT_BUCKETS), total.ttft_sum)
        for (api, model), count in by_model.items():
            failovers.add_metric([api, model], count)
        yield from (requests, duration, ttft, tokens, cost, failovers)


@dataclass
class _Running:
    """The running state `refresh` copies in: what one process shows besides its request cells."""

    in_flight: int = 0
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    refusals: dict[tuple[str, str], int] = field(default_factory=dict)
    circuits: dict[tuple[str, str], str] = field(default_factory=dict)
    backlog: int = 0
    lag_s: float = 0.0
    config_age_s: float = 0.0
    config_version: int = -1
    limits: str = ""  # memory, redis or local; "" not reported
    redis_errors: int = 0


def _dump(cells: dict[tuple[str, str, str, int], _Cell], running: _Running) -> bytes:
    """One process's figures as JSON, for the worker answering a scrape."""
    return orjson.dumps({
        "cells": [[*key, c.requests, c.tokens, c.cost, c.failovers, c.duration, c.duration_sum, c.ttft, c.ttft_sum]
                  for key, c in cells.items()],
        "attempts": [[*k, v] for k, v in running.attempts.items()],
        "refusals": [[*k, v] for k, v in running.refusals.items()],
        "circuits": [[*k, v] for k, v in running.circuits.items()],
        "in_flight": running.in_flight, "backlog": running.backlog, "lag_s": running.lag_s,
        "config_age_s": running.config_age_s if math.isfinite(running.config_age_s) else None,
        "config_version": running.config_version, "limits": running.limits, "redis_errors": running.redis_errors,
    })


def _load(raw: bytes) -> tuple[dict[tuple[str, str, str, int], _Cell], _Running]:
    data = orjson.loads(raw)
    cells: dict[tuple[str, str, str, int], _Cell] = {}
    for api, model, provider, status, requests, tokens, cost, failovers, duration, dsum, ttft, tsum in data["cells"]:
        cell = cells[(api, model, provider, status)] = _Cell()
        cell.requests, cell.tokens, cell.cost, cell.failovers = requests, tokens, cost, failovers
        cell.duration, cell.duration_sum, cell.ttft, cell.ttft_sum = duration, dsum, ttft, tsum
    age = data["config_age_s"]
    running = _Running(
        in_flight=data["in_flight"], attempts={(a, b): n for a, b, n in data["attempts"]},
        refusals={(a, b): n for a, b, n in data["refusals"]}, circuits={(a, b): v for a, b, v in data["circuits"]},
        backlog=data["backlog"], lag_s=data["lag_s"], config_age_s=math.inf if age is None else age,
        config_version=data["config_version"], limits=data["limits"], redis_errors=data["redis_errors"],
    )
    return cells, running


def _add_cells(into: dict[tuple[str, str, str, int], _Cell], cells: dict[tuple[str, str, str, int], _Cell]) -> None:
    for key, cell in cells.items():
        total = into.get(key)
        if total is None:
            total = into[key] = _Cell()
        total.add(cell)


class _RunningFamilies:
    """The collector exposing the running state (of one process, or summed over the workers)."""

    def __init__(self, running: Callable[[], list[_Running]]) -> None:
        self._running = running

    def collect(self) -> Iterator[Metric]:
        """Gauges and counters of the running state; sums over workers, except ages (oldest) and circuits (worst)."""
        every = self._running()
        attempts = CounterMetricFamily("nexusai_upstream_attempts", "Upstream attempts by provider and result.",
                                       labels=["provider", "result"])
        refusals = CounterMetricFamily("nexusai_refusals", "Requests refused before any upstream call (limits, "
                                       "scope, unknown model, bad input), by client API and reason.",
                                       labels=["api", "reason"])
        circuit = GaugeMetricFamily("nexusai_circuit_state", "Circuit state: 0 closed, 1 half-open, 2 open (model "
                                    "empty: the provider's own circuit; the worst over the workers).",
                                    labels=["provider", "model"])
        backends = GaugeMetricFamily("nexusai_limits_backend", "Proxy processes by where they keep key limits now: "
                                     "memory (each its own), redis (shared), local (a share while Redis is away).",
                                     labels=["backend"])
        attempt_sums: Tally[tuple[str, str]] = Tally()
        refusal_sums: Tally[tuple[str, str]] = Tally()
        worst: dict[tuple[str, str], int] = {}
        by_backend: Tally[str] = Tally()
        for r in every:
            attempt_sums.update(r.attempts)
            refusal_sums.update(r.refusals)
            for labels, state in r.circuits.items():
                worst[labels] = max(worst.get(labels, 0), CIRCUIT_VALUES[state])
            if r.limits:
                by_backend[r.limits] += 1
        for labels, n in attempt_sums.items():
            attempts.add_metric(list(labels), n)
        for labels, n in refusal_sums.items():
            refusals.add_metric(list(labels), n)
        for labels, value in worst.items():
            circuit.add_metric(list(labels), value)
        for backend, n in by_backend.items():
            backends.add_metric([backend], n)
        yield from (attempts, refusals, circuit, backends)
        yield GaugeMetricFamily("nexusai_requests_in_flight", "Exchanges running now.",
                                value=sum(r.in_flight for r in every))
        yield GaugeMetricFamily("nexusai_usage_backlog_rows", "Usage rows journaled and not yet in the database.",
                                value=sum(r.backlog for r in every))
        yield GaugeMetricFamily("nexusai_usage_lag_seconds", "Age of the oldest usage row waiting for the database.",
                                value=max(r.lag_s for r in every))
        yield GaugeMetricFamily("nexusai_config_age_seconds", "Seconds since the config snapshot was last confirmed "
                                "current (the oldest over the workers).", value=max(r.config_age_s for r in every))
        yield GaugeMetricFamily("nexusai_config_version", "The config version the snapshot holds (the lowest over "
                                "the workers).", value=min(r.config_version for r in every))
        if any(r.limits in ("redis", "local") for r in every):
            yield CounterMetricFamily("nexusai_redis_errors", "Redis calls of the limiter that failed.",
                                      value=sum(r.redis_errors for r in every))


class ProxyMetrics:
    """The proxy's metric families, the sink that feeds them and the scrape's rendering.

    With `peers_dir` (PROXY_WORKERS > 1) each worker writes its figures there once a
    second and the worker answering a scrape adds up the others' latest with its own, so
    one scrape of the shared port shows the whole gateway (the others' at most a second
    old). The process_* families describe one process, so they are shown only without it.
    """

    def __init__(self, peers_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._cells: dict[tuple[str, str, str, int], _Cell] = {}
        self._running = _Running()
        self.peers_dir = peers_dir
        self._peers: list[tuple[dict[tuple[str, str, str, int], _Cell], _Running]] = []
        r.register(_RequestFamilies(self._merged_cells))
        r.register(_RunningFamilies(lambda: [self._running, *(running for _, running in self._peers)]))
        if peers_dir is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        else:
            peers_dir.mkdir(parents=True, exist_ok=True)
            self._own_file = peers_dir / f"{os.getpid()}.json"

    def _merged_cells(self) -> dict[tuple[str, str, str, int], _Cell]:
        if not self._peers:
            return self._cells
        merged: dict[tuple[str, str, str, int], _Cell] = {}
        for cells in (self._cells, *(cells for cells, _ in self._peers)):
            _add_cells(merged, cells)
        return merged
    # --- per request (the outcome sink) -------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Count one finished exchange (plain sums: no lock, no label lookup)."""
        ex = outcome.exchange
        route = ex.route
        key = ("ws" if ex.transport == "ws" else ex.api.name, route.model_name, route.provider.name, outcome.status)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell()
        cell.requests += 1
        seconds = outcome.latency_ms / 1000.0
        cell.duration[bisect_left(DURATION_BUCKETS, seconds)] += 1
        cell.duration_sum += seconds
        ttft = ex.meter.ttft_ms
        if ttft is not None:
            seconds = ttft / 1000.0
            cell.ttft[bisect_left(TTFT_BUCKETS, seconds)] += 1
            cell.ttft_sum += seconds
        usage = outcome.usage
        tokens = cell.tokens
        tokens[0] += usage.prompt_tokens
        tokens[1] += usage.completion_tokens
        if usage.cached_tokens or usage.cache_write_tokens or usage.reasoning_tokens:
            tokens[2] += usage.cached_tokens
            tokens[3] += usage.cache_write_tokens
            tokens[4] += usage.reasoning_tokens
        if outcome.cost_usd:
            cell.cost += float(outcome.cost_usd)
        if ex.attempts > 1:
            cell.failovers += ex.attempts - 1

    # --- state copied in ----------------------------------------------------------------------

    def refresh(self, *, in_flight: int, attempts: Tally[tuple[str, str]], refusals: Tally[tuple[str, str]],
                circuits: dict[tuple[str, str], str], backlog: int, lag_s: float, config_age_s: float,
                config_version: int, limits: Mapping[str, object] | None = None) -> None:
        """Copy the proxy's running state in (once a second, and before a scrape)."""
        self._running = _Running(
            in_flight=in_flight, attempts=dict(attempts), refusals=dict(refusals), circuits=circuits,
            backlog=backlog, lag_s=lag_s, config_age_s=config_age_s, config_version=config_version,
            limits=str(limits["backend"]) if limits is not None else "",
            redis_errors=int(str(limits.get("failures", 0))) if limits is not None else 0,
        )

    # --- several workers ----------------------------------------------------------------------

    def publish(self) -> None:
        """Write this worker's figures for the others (blocking: call off the loop)."""
        if self.peers_dir is None:
            return
        tmp = self._own_file.with_suffix(".tmp")
        tmp.write_bytes(_dump(self._cells, self._running))
        os.replace(tmp, self._own_file)

    def gather(self) -> None:
        """Read the other live workers' latest figures (blocking: call off the loop)."""
        if self.peers_dir is None:
            return
        peers = []
        now = time.time()
        for path in self.peers_dir.glob("*.json"):
            if path == self._own_file:
                continue
            try:
                if now - path.stat().st_mtime > PEER_STALE_S or not _alive(int(path.stem)):
                    continue  # left by a worker that is gone
                peers.append(_load(path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours
        self._peers = peers

    def withdraw(self) -> None:
        """Remove this worker's file (at shutdown)."""
        if self.peers_dir is not None:
            self._own_file.unlink(missing_ok=True)

    # --- the scrape ---------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
