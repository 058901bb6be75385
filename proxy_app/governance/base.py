"""The limiter interface every implementation offers the exchange."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from proxy_app.config import KeyCfg
from proxy_app.errors import ProxyError

WINDOW_S = 60.0  # rpm and tpm slide over the last minute


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

    def status(self) -> dict[str, object]:
        """Where the limits are kept now (readiness and metrics read it)."""
        ...


def is_limited(key: KeyCfg) -> bool:
    """Whether any governance applies to the key."""
    return bool(key.rpm or key.tpm or key.max_concurrency or key.token_quota or key.budget_usd is not None)


def needs_reservation(key: KeyCfg) -> bool:
    """Whether admission needs a token estimate for this key."""
    return bool(key.tpm or key.token_quota or key.budget_usd is not None)


# limit -> (the message, with {value} and {period}; error code; error type)
_REFUSALS = {
    "concurrency": ("Concurrency limit reached: this key allows {value} requests at once.",
                    "concurrency_limit_exceeded", "rate_limit_error"),
    "rpm": ("Rate limit reached: this key allows {value} requests per minute.", "rate_limit_exceeded",
            "rate_limit_error"),
    "tpm": ("Rate limit reached: this key allows {value} tokens per minute.", "rate_limit_exceeded",
            "rate_limit_error"),
    "quota": ("Token quota exhausted: this key allows {value} tokens ({period}).", "insufficient_quota",
              "insufficient_quota"),
    "budget": ("Budget exhausted: this key allows {value} USD ({period}).", "insufficient_quota",
               "insufficient_quota"),
}


def refusal(key: KeyCfg, limit: str, wait_s: float) -> ProxyError:
    """The 429 naming the limit (`concurrency`, `rpm`, `tpm`, `quota`, `budget`) a request ran into."""
    values = {"concurrency": key.max_concurrency, "rpm": key.rpm, "tpm": key.tpm, "quota": key.token_quota,
              "budget": key.budget_usd.normalize() if key.budget_usd is not None else None}
    template, code, type_ = _REFUSALS[limit]
    message = template.format(value=values[limit], period=key.quota_period)
    headers = {"Retry-After": str(max(1, math.ceil(wait_s)))} if math.isfinite(wait_s) else {}
    return ProxyError(429, message, type=type_, code=code, headers=headers)


def _duration(seconds: float) -> str:
    # OpenAI's reset headers use Go-style durations ("6m0s", "1.5s", "20ms").
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.3g}s"


def limit_headers(key: KeyCfg, now: float, admitted: int, oldest: float | None, tokens_used: int,
                  oldest_tokens: float | None) -> dict[str, str]:
    """OpenAI's and the common X-RateLimit headers after an admission (times in epoch seconds)."""
    headers: dict[str, str] = {}
    if key.rpm:
        remaining = max(0, key.rpm - admitted)
        reset = oldest + WINDOW_S - now if oldest is not None else 0.0
        headers["x-ratelimit-limit-requests"] = str(key.rpm)
        headers["x-ratelimit-remaining-requests"] = str(remaining)
        headers["x-ratelimit-reset-requests"] = _duration(reset)
        headers["X-RateLimit-Limit"] = str(key.rpm)
        headers["X-RateLimit-Remaining"] = str(remaining)
        headers["X-RateLimit-Reset"] = str(math.ceil(reset))
    if key.tpm:
        remaining = max(0, key.tpm - tokens_used)
        reset = oldest_tokens + WINDOW_S - now if oldest_tokens is not None else 0.0
        headers["x-ratelimit-limit-tokens"] = str(key.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(remaining)
        headers["x-ratelimit-reset-tokens"] = _duration(reset)
        if not key.rpm:
            headers["X-RateLimit-Limit"] = str(key.tpm)
            headers["X-RateLimit-Remaining"] = str(remaining)
            headers["X-RateLimit-Reset"] = str(math.ceil(reset))
    return headers
