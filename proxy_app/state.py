"""The proxy's long-lived services, reachable from handlers through one app key."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from proxy_app.config import ConfigStore
from proxy_app.limits import Limiter
from proxy_app.upstream_http import UpstreamClient
from shared.archive import ArchiveWriter
from shared.settings import Settings
from shared.tokens import TokenCounter
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
    # Finalisations moved off a cancelled handler; awaited before the writers stop.
    background: set[asyncio.Task[None]] = field(default_factory=set)
