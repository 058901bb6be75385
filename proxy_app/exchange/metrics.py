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
One proxy process serves its own figures; several workers behind one port are the
scale-out issue's to merge.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from proxy_app.exchange.outcome import Outcome

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_KINDS = ("prompt", "completion", "cached", "cache_write", "reasoning")
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}
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


def _buckets(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(bounds, counts, strict=False):  # counts[-1] is +Inf's
        running += count
        out.append((repr(float(bound)), running))
    out.append(("+Inf", running + counts[-1]))
    return out


class _RequestFamilies:
    """The collector exposing the cells as Prometheus families."""

    def __init__(self, cells: dict[tuple[str, str, str, int], _Cell]) -> None:
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
        for (api, model, provider, status), cell in self._cells.items():
            requests.add_metric([api, model, provider, str(status)], cell.requests)
            total = merged.get((api, model, provider))
            if total is None:
                total = merged[(api, model, provider)] = _Cell()
            total.requests += cell.requests
            total.tokens = [a + b for a, b in zip(total.tokens, cell.tokens, strict=True)]
            total.cost += cell.cost
            total.duration = [a + b for a, b in zip(total.duration, cell.duration, strict=True)]
            total.duration_sum += cell.duration_sum
            total.ttft = [a + b for a, b in zip(total.ttft, cell.ttft, strict=True)]
            total.ttft_sum += cell.ttft_sum
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


class ProxyMetrics:
    """The proxy's metric families, the sink that feeds them and the scrape's rendering."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._cells: dict[tuple[str, str, str, int], _Cell] = {}
        r.register(_RequestFamilies(self._cells))
        self.attempts = Counter("nexusai_upstream_attempts", "Upstream attempts by provider and result.",
                                ("provider", "result"), registry=r)
        self.refusals = Counter("nexusai_refusals", "Requests refused before any upstream call (limits, scope, "
                                "unknown model, bad input), by client API and reason.", ("api", "reason"), registry=r)
        self.in_flight = Gauge("nexusai_requests_in_flight", "Exchanges running now.", registry=r)
        self.circuit = Gauge("nexusai_circuit_state", "Circuit state: 0 closed, 1 half-open, 2 open "
                             "(model empty: the provider's own circuit).", ("provider", "model"), registry=r)
        self.backlog = Gauge("nexusai_usage_backlog_rows", "Usage rows journaled and not yet in the database.",
                             registry=r)
        self.lag = Gauge("nexusai_usage_lag_seconds", "Age of the oldest usage row waiting for the database.",
                         registry=r)
        self.config_age = Gauge("nexusai_config_age_seconds", "Seconds since the config snapshot was last confirmed "
                                "current.", registry=r)
        self.config_version = Gauge("nexusai_config_version", "The config version the snapshot holds.", registry=r)
        self.limits_backend = Gauge("nexusai_limits_backend", "1 for where key limits are kept now: memory (one "
                                    "process), redis (shared), local (this process's share while Redis is away).",
                                    ("backend",), registry=r)
        self._backend_shown = ""
        self.redis_errors = Counter("nexusai_redis_errors", "Redis calls of the limiter that failed.", registry=r)
        self._redis_errors_seen = 0
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._attempts_seen: Tally[tuple[str, str]] = Tally()
        self._refusals_seen: Tally[tuple[str, str]] = Tally()
        self._circuits_shown: set[tuple[str, str]] = set()

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
        if limits is not None:
            backend = str(limits["backend"])
            if backend != self._backend_shown:
                if self._backend_shown:
                    self.limits_backend.remove(self._backend_shown)
                self.limits_backend.labels(backend).set(1)
                self._backend_shown = backend
            failures = int(str(limits.get("failures", 0)))
            if failures > self._redis_errors_seen:
                self.redis_errors.inc(failures - self._redis_errors_seen)
                self._redis_errors_seen = failures

    @staticmethod
    def _grow(counter: Counter, totals: Tally[tuple[str, str]], seen: Tally[tuple[str, str]]) -> None:
        for labels, total in totals.items():
            delta = total - seen[labels]
            if delta > 0:
                counter.labels(*labels).inc(delta)
                seen[labels] = total

    # --- the scrape ---------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
