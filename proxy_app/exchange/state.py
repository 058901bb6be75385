"""The exchange's long-lived services, built once at start-up (see lifecycle) and shared by every request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy_app.config import ConfigStore, Route
from proxy_app.exchange.archive import ArchiveWriter
from proxy_app.exchange.outcome import Sink
from proxy_app.exchange.tokens import TokenCounter
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
