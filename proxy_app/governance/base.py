"""The limiter interface every implementation offers the exchange."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from proxy_app.config import KeyCfg


@dataclass(slots=True)
class Ticket:
    """One admitted request's hold on its key's limits."""

    key_id: int
    reserved_tokens: int
    reserved_usd: Decimal
    settled: bool = False
    detached: bool = False  # its usage will be settled by a background recording


class Limiter(Protocol):
    """Admits requests against their key's limits and settles them when they end."""

    def seed(self, consumption: Mapping[int, tuple[str, float, int, Decimal]]) -> None:
        """Recorded consumption per key from the latest snapshot: (period, period start, tokens, usd)."""
        ...

    async def admit(self, key: KeyCfg, reserve_tokens: int, reserve_usd: Decimal) -> tuple[Ticket, dict[str, str]]:
        """A ticket holding the reservation and the rate-limit headers, or ProxyError 429 naming the limit."""
        ...

    async def settle(self, ticket: Ticket, tokens: int, cost: Decimal) -> None:
        """Replace the ticket's reservation with what the request used (once per ticket)."""
        ...

    async def release(self, ticket: Ticket | None) -> None:
        """Free a ticket that will never be settled with usage (idempotent)."""
        ...


def is_limited(key: KeyCfg) -> bool:
    """Whether any governance applies to the key."""
    return bool(key.rpm or key.tpm or key.max_concurrency or key.token_quota or key.budget_usd is not None)


def needs_reservation(key: KeyCfg) -> bool:
    """Whether admission needs a token estimate for this key."""
    return bool(key.tpm or key.token_quota or key.budget_usd is not None)
