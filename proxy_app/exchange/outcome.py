"""How an exchange ended, and the sink interface that records it.

Sinks read the finished exchange through `Recorded`, the part of an exchange a record
needs, so the sinks never depend on the runner (nor the runner on them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from proxy_app.config import KeyCfg, Route
from proxy_app.exchange.api import Api
from proxy_app.exchange.meter import Meter, Usage
from proxy_app.governance import Ticket

if TYPE_CHECKING:
    from proxy_app.exchange.tracing import Attempt


class Recorded(Protocol):
    """What a sink may read of a finished exchange."""

    @property
    def request_id(self) -> str: ...
    @property
    def conversation_id(self) -> str: ...
    @property
    def transport(self) -> str: ...
    @property
    def api(self) -> Api: ...
    @property
    def key(self) -> KeyCfg: ...
    @property
    def model(self) -> str: ...
    @property
    def route(self) -> Route: ...
    @property
    def stream(self) -> bool: ...
    @property
    def meter(self) -> Meter: ...
    @property
    def ticket(self) -> Ticket | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def client_body(self) -> dict[str, Any]: ...
    @property
    def attempts(self) -> int: ...
    @property
    def trail(self) -> Sequence[Attempt] | None: ...


@dataclass(slots=True)
class Outcome:
    """How one exchange ended, as recorded."""

    exchange: Recorded
    status: int
    error_type: str | None
    usage: Usage
    cost_usd: Decimal
    latency_ms: float


class Sink(Protocol):
    """Keeps one part of every outcome."""

    def record(self, outcome: Outcome) -> Awaitable[None] | None:
        """Take one outcome, once per exchange, without blocking the loop.

        A sink with I/O to wait for (a Redis settlement, say) returns it as an awaitable and
        the runner awaits it; the others return None and cost no coroutine per request.
        """
        ...
