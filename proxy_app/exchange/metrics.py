"""Prometheus metrics of the proxy: an outcome sink for per-request figures, a refresher for the rest.

Per request (the sink, on the loop): requests by api/model/provider/status, duration and
time-to-first-token histograms, tokens by kind, cost, failovers. The label children of
each (api, model, provider, status) are looked up once and kept, so a request costs a
dict lookup and a few increments. Everything else (requests in flight, upstream
attempts by result, circuit states, limiter refusals, the usage writer's backlog and
lag, the config snapshot's age) is state the proxy keeps anyway; `refresh` copies it
into gauges and counters once a second and before each scrape.

With PROMETHEUS_MULTIPROC_DIR set (several processes behind one port) prometheus_client
keeps every value in files of that directory and any process's /metrics adds them up;
the gauges say how (in-flight and backlog summed, ages and circuit states the largest).
Labels are bounded: APIs, configured models and providers, status codes, fixed kinds.
"""

from __future__ import annotations

import os
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

from proxy_app.exchange.outcome import Outcome

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_KINDS = ("prompt", "completion", "cached", "cache_write", "reasoning")
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def multiprocess_dir() -> str | None:
    """The directory shared by several processes' metrics, if this process is one of them."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Cell:
    """The label children one (api, model, provider, status) updates per request."""

    __slots__ = ("requests", "duration", "ttft", "tokens", "cost", "failovers")

    def __init__(self, m: ProxyMetrics, api: str, model: str, provider: str, status: str) -> None:
        self.requests = m.requests.labels(api, model, provider, status)
        self.duration = m.duration.labels(api, model, provider)
        self.ttft = m.ttft.labels(api, model, provider)
        self.tokens = tuple(m.tokens.labels(api, model, provider, kind) for kind in TOKEN_KINDS)
        self.cost = m.cost.labels(api, model, provider)
        self.failovers = m.failovers.labels(api, model)


class ProxyMetrics:
    """The proxy's metric families, the sink that feeds them and the scrape's rendering."""

    def __init__(self) -> None:
        self.shared_dir = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("api", "model", "provider")
        self.requests = Counter("nexusai_requests", "Requests answered, by client API, model, provider and status.",
                                (*labels, "status"), registry=r)
        self.duration = Histogram("nexusai_request_duration_seconds", "Time from the request to the end of its reply.",
                                  labels, buckets=DURATION_BUCKETS, registry=r)
        self.ttft = Histogram("nexusai_time_to_first_token_seconds",
                              "Time from the request to the upstream's first stream event (or whole reply).",
                              labels, buckets=TTFT_BUCKETS, registry=r)
        self.tokens = Counter("nexusai_tokens", "Tokens recorded; cached and cache_write are parts of prompt, "
                              "reasoning of completion.", (*labels, "kind"), registry=r)
        self.cost = Counter("nexusai_cost_usd", "Cost recorded, in USD.", labels, registry=r)
        self.failovers = Counter("nexusai_failovers", "Upstream attempts beyond the first one of a request.",
                                 ("api", "model"), registry=r)
        self.attempts = Counter("nexusai_upstream_attempts", "Upstream attempts by provider and result.",
                                ("provider", "result"), registry=r)
        self.refusals = Counter("nexusai_refusals", "Requests refused before any upstream call (limits, scope, "
                                "unknown model, bad input), by client API and reason.", ("api", "reason"), registry=r)
        self.in_flight = Gauge("nexusai_requests_in_flight", "Exchanges running now.", registry=r,
                               multiprocess_mode="livesum")
        self.circuit = Gauge("nexusai_circuit_state", "Circuit state: 0 closed, 1 half-open, 2 open "
                             "(model empty: the provider's own circuit).", ("provider", "model"), registry=r,
                             multiprocess_mode="livemax")
        self.backlog = Gauge("nexusai_usage_backlog_rows", "Usage rows journaled and not yet in the database.",
                             registry=r, multiprocess_mode="livesum")
        self.lag = Gauge("nexusai_usage_lag_seconds", "Age of the oldest usage row waiting for the database.",
                         registry=r, multiprocess_mode="livemax")
        self.config_age = Gauge("nexusai_config_age_seconds", "Seconds since the config snapshot was last confirmed "
                                "current.", registry=r, multiprocess_mode="livemax")
        self.config_version = Gauge("nexusai_config_version", "The config version the snapshot holds.", registry=r,
                                    multiprocess_mode="livemin")
        if self.shared_dir is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self._cells: dict[tuple[str, str, str, int], _Cell] = {}
        self._attempts_seen: Tally[tuple[str, str]] = Tally()
        self._refusals_seen: Tally[tuple[str, str]] = Tally()
        self._circuits_shown: set[tuple[str, str]] = set()

    # --- per request (the outcome sink) -------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Count one finished exchange."""
        ex = outcome.exchange
        route = ex.route
        api = "ws" if ex.transport == "ws" else ex.api.name
        key = (api, route.model_name, route.provider.name, outcome.status)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell(self, api, route.model_name, route.provider.name, str(outcome.status))
        cell.requests.inc()
        cell.duration.observe(outcome.latency_ms / 1000.0)
        ttft = ex.meter.ttft_ms
        if ttft is not None:
            cell.ttft.observe(ttft / 1000.0)
        usage = outcome.usage
        prompt, completion, cached, written, reasoning = cell.tokens
        if usage.prompt_tokens:
            prompt.inc(usage.prompt_tokens)
        if usage.completion_tokens:
            completion.inc(usage.completion_tokens)
        if usage.cached_tokens:
            cached.inc(usage.cached_tokens)
        if usage.cache_write_tokens:
            written.inc(usage.cache_write_tokens)
        if usage.reasoning_tokens:
            reasoning.inc(usage.reasoning_tokens)
        if outcome.cost_usd:
            cell.cost.inc(float(outcome.cost_usd))
        if ex.attempts > 1:
            cell.failovers.inc(ex.attempts - 1)

    # --- state copied in ----------------------------------------------------------------------

    def refresh(self, *, in_flight: int, attempts: Tally[tuple[str, str]], refusals: Tally[tuple[str, str]],
                circuits: dict[tuple[str, str], str], backlog: int, lag_s: float, config_age_s: float,
                config_version: int) -> None:
        """Copy the proxy's running state into the gauges and counters (counters by their growth)."""
        self.in_flight.set(in_flight)
        self._grow(self.attempts, attempts, self._attempts_seen)
        self._grow(self.refusals, refusals, self._refusals_seen)
        for labels, state in circuits.items():
            self.circuit.labels(*labels).set(CIRCUIT_VALUES[state])
        for gone in self._circuits_shown - circuits.keys():
            self.circuit.remove(*gone)
        self._circuits_shown = set(circuits)
        self.backlog.set(backlog)
        self.lag.set(lag_s)
        self.config_age.set(config_age_s)
        self.config_version.set(config_version)

    @staticmethod
    def _grow(counter: Counter, totals: Tally[tuple[str, str]], seen: Tally[tuple[str, str]]) -> None:
        for labels, total in totals.items():
            delta = total - seen[labels]
            if delta > 0:
                counter.labels(*labels).inc(delta)
                seen[labels] = total

    # --- the scrape ---------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition text (every process's, when they share a directory) and its content type."""
        if self.shared_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST


def mark_dead(pid: int) -> None:
    """Drop a stopped process's live gauges from the shared directory (its counters stay)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


Clock = Callable[[], float]


def age(since: float | None, clock: Clock = time.monotonic) -> float:
    """Seconds since a monotonic instant (infinite when it never happened)."""
    return float("inf") if since is None else max(0.0, clock() - since)


def labels_of(report: dict[int, dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Circuit states from a Breakers report, by (provider, model); model '' is the provider's circuit."""
    out: dict[tuple[str, str], str] = {}
    for entry in report.values():
        name = str(entry["name"])
        out[(name, "")] = str(entry["state"])
        for model, state in dict(entry["models"]).items():
            out[(name, model)] = state
    return out
