"""The exchange's long-lived services, built once at start-up (see lifecycle) and shared by every request."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy_app.config import ConfigStore, Route
from proxy_app.exchange.archive import ArchiveWriter
from proxy_app.exchange.metrics import ProxyMetrics
from proxy_app.exchange.outcome import Sink
from proxy_app.exchange.tokens import TokenCounter
from proxy_app.exchange.tracing import Tracing
from proxy_app.governance import Limiter
from proxy_app.governance.breaker import Breakers
from proxy_app.transport.http import UpstreamClient
from shared.settings import Settings
from shared.usage_journal import UsageRecorder


@dataclass
class ProxyState:
    """Everything a request needs besides the request itself."""

    settings: Settings
    config: ConfigStore
    upstream: UpstreamClient
    usage: UsageRecorder
    archive: ArchiveWriter
    tokens: TokenCounter
    limiter: Limiter
    breakers: Breakers
    # Orders equal-priority candidates (ROUTING_STRATEGY); None: by weight.
    rank: Callable[[Route], float] | None = None
    sinks: tuple[Sink, ...] = ()  # each outcome goes to every one, in order
    # Recordings moved off a cancelled handler, and WebSocket turns; awaited before the writers stop.
    background: set[asyncio.Task[object]] = field(default_factory=set)
    metrics: ProxyMetrics | None = None  # METRICS_ENABLED
    tracing: Tracing | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT
    in_flight: int = 0  # exchanges running
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)  # (api, reason) refused before routing

    def observe(self) -> None:
        """Copy the running state into the metrics (once a second, and before a scrape)."""
        metrics = self.metrics
        if metrics is None:
            return
        confirmed = self.config.confirmed_at
        metrics.refresh(
            in_flight=self.in_flight, attempts=self.breakers.attempts, refusals=self.refusals,
            circuits=self.breakers.circuit_states(), backlog=self.usage.backlog_rows(), lag_s=self.usage.lag_s(),
            config_age_s=float("inf") if confirmed is None else time.monotonic() - confirmed,
            config_version=self.config.snapshot.version, limits=self.limiter.status(),
        )
