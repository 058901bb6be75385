"""The in-memory limiter: rpm, tpm, concurrency, token quota and budget, per key, in one process.

Every check is O(1) amortised and touches no database. Windows slide (a
deque of admission times), so no boundary lets twice the limit through.
Requests in flight hold a reservation (prompt + max_tokens) that is settled
to the real figures when they end, so concurrent requests cannot overshoot
a token limit by more than one reservation. Consumption of quotas for the
current period is seeded from the usage records at start-up.

One process enforces its own counts: several proxy processes each allow the
full limit unless they share them through Redis (shared_limits.RedisLimiter, which
also falls back to one of these, with each limit cut to the process's share).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal

from proxy_app.config import KeyCfg
from proxy_app.governance.base import WINDOW_S, Ticket, limit_headers, refusal
from shared.periods import period_bounds

ZERO_USD = Decimal(0)


class KeyState:
    """Live counters of one key."""

    __slots__ = (
        "admitted", "tokens", "window_tokens", "reserved_tokens", "reserved_usd",
        "in_flight", "quota", "period_end", "used_tokens", "used_usd",
    )

    def __init__(self) -> None:
        self.admitted: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.window_tokens = 0
        self.reserved_tokens = 0
        self.reserved_usd = ZERO_USD
        self.in_flight = 0
        self.quota: tuple[str, bool, bool] = ("", False, False)  # what the used_* figures were counted for
        self.period_end = math.inf
        self.used_tokens = 0
        self.used_usd = ZERO_USD

    def slide(self, now: float) -> None:
        """Drop what left the one-minute window."""
        horizon = now - WINDOW_S
        admitted = self.admitted
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        tokens = self.tokens
        while tokens and tokens[0][0] <= horizon:
            self.window_tokens -= tokens.popleft()[1]


class MemoryLimiter:
    """Admits or refuses requests per key, and settles them when they end; all in this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._states: dict[int, KeyState] = {}
        self._seed: dict[int, tuple[str, float, int, Decimal]] = {}

    def seed(self, consumption: Mapping[int, tuple[str, float, int, Decimal]]) -> None:
        """Recorded consumption per key from the latest snapshot: (period, period start, tokens, usd)."""
        self._seed.update(consumption)

    def state(self, key: KeyCfg) -> KeyState:
        """The live state of a key, with its quota period rolled forward if it ended."""
        st = self._states.get(key.id)
        now = self.clock()
        quota = (key.quota_period, key.token_quota is not None, key.budget_usd is not None)
        if st is None:
            st = self._states[key.id] = KeyState()
            self._start_period(st, key, quota, now)
        elif st.quota != quota:
            # The admin changed the key's quota: take what the usage records say for it.
            self._start_period(st, key, quota, now)
        elif now >= st.period_end:
            self._start_period(st, key, quota, now)
        return st

    def _start_period(self, st: KeyState, key: KeyCfg, quota: tuple[str, bool, bool], now: float) -> None:
        start, end = period_bounds(key.quota_period, datetime.fromtimestamp(now, timezone.utc))
        seeded = self._seed.get(key.id)
        # Recorded figures count only for the period they were summed over (not yesterday's day).
        if seeded is not None and seeded[0] == key.quota_period and seeded[1] == start.timestamp():
            st.used_tokens, st.used_usd = seeded[2], seeded[3]
        else:
            st.used_tokens, st.used_usd = 0, ZERO_USD
        st.quota = quota
        st.period_end = end.timestamp() if end is not None else math.inf

    async def admit(self, key: KeyCfg, reserve_tokens: int, reserve_usd: Decimal) -> tuple[Ticket, dict[str, str]]:
        """Admit one request or raise a 429 naming the limit; returns the ticket and limit headers."""
        return self.admit_now(key, reserve_tokens, reserve_usd)

    def admit_now(self, key: KeyCfg, reserve_tokens: int, reserve_usd: Decimal) -> tuple[Ticket, dict[str, str]]:
        """`admit`, synchronously (nothing here waits)."""
        st = self.state(key)
        now = self.clock()
        st.slide(now)
        if key.max_concurrency and st.in_flight >= key.max_concurrency:
            raise refusal(key, "concurrency", 1)
        if key.rpm and len(st.admitted) >= key.rpm:
            raise refusal(key, "rpm", st.admitted[0] + WINDOW_S - now)
        if key.tpm and st.window_tokens + st.reserved_tokens >= key.tpm:
            raise refusal(key, "tpm", (st.tokens[0][0] + WINDOW_S - now) if st.tokens else 1.0)
        if key.token_quota and st.used_tokens + st.reserved_tokens >= key.token_quota:
            raise refusal(key, "quota", st.period_end - now)
        if key.budget_usd is not None and st.used_usd + st.reserved_usd >= key.budget_usd:
            raise refusal(key, "budget", st.period_end - now)
        st.in_flight += 1
        st.admitted.append(now)
        st.reserved_tokens += reserve_tokens
        st.reserved_usd += reserve_usd
        return Ticket(key.id, reserve_tokens, reserve_usd), self._headers(key, st, now)

    def _headers(self, key: KeyCfg, st: KeyState, now: float) -> dict[str, str]:
        return limit_headers(
            key, now, len(st.admitted), st.admitted[0] if st.admitted else None,
            st.window_tokens + st.reserved_tokens, st.tokens[0][0] if st.tokens else None,
        )

    async def settle(self, ticket: Ticket, tokens: int, cost: Decimal) -> None:
        """Replace the ticket's reservation with what the request really used (once)."""
        self.settle_now(ticket, tokens, cost)

    def settle_now(self, ticket: Ticket, tokens: int, cost: Decimal) -> None:
        """`settle`, synchronously."""
        if ticket.settled:
            return
        ticket.settled = True
        st = self._states.get(ticket.key_id)
        if st is None:
            return
        st.in_flight -= 1
        st.reserved_tokens -= ticket.reserved_tokens
        st.reserved_usd -= ticket.reserved_usd
        if tokens:
            st.tokens.append((self.clock(), tokens))
            st.window_tokens += tokens
            st.used_tokens += tokens
        if cost:
            st.used_usd += cost

    async def release(self, ticket: Ticket | None) -> None:
        """Free a ticket that will never be settled with usage (safety net, idempotent)."""
        if ticket is not None and not ticket.detached:
            self.settle_now(ticket, 0, ZERO_USD)

    def status(self) -> dict[str, object]:
        """Where the limits are kept: this process's memory."""
        return {"backend": "memory"}

