"""The Redis limiter: a key's limits exact across every proxy process and machine sharing one Redis.

Each admission is one server-side Lua script (one round trip) that slides the key's
windows, takes back the slots of holders whose lease ran out, checks every limit and
records the admission; each settlement is one more. Keys that need no settlement
(rpm only) cost the admission alone. Concurrency slots and reservations are leases
(REDIS_LEASE_S) that this process renews for its live tickets, so a process that
dies gives its holds back within one lease. A quota period is seeded from the usage
records by the first process that reaches it, then shared.

Redis trouble never takes the proxy down: every call has a short timeout, the first
failure opens a breaker, and while Redis is away each process admits on local limits
sized to its share (the limit divided by the processes last seen alive). A probe
brings Redis back: what was used locally meanwhile is added to the shared figures,
and admissions are shared again.

Windows use each process's clock: machines sharing a Redis keep theirs in sync (NTP).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from proxy_app.config import KeyCfg
from proxy_app.governance.base import WINDOW_S, Ticket, limit_headers, refusal
from proxy_app.governance.memory import ZERO_USD, MemoryLimiter
from proxy_app.governance.resp import RedisTrouble, Resp
from shared.periods import period_bounds

log = logging.getLogger("nexusai.proxy.limits")

LUA = Path(__file__).resolve().parent / "lua"
PICO = Decimal("1e12")  # USD are counted in integer pico-dollars in Redis
PROBE_INTERVAL_S = 1.0
QUOTA_KEEP = timedelta(days=2)  # a period's figures outlive its end by this much
REFUSALS = {1: "concurrency", 2: "rpm", 3: "tpm", 4: "quota", 5: "budget"}


def pico(usd: Decimal) -> int:
    """USD as integer pico-dollars."""
    return int((usd * PICO).to_integral_value(ROUND_HALF_EVEN))


@dataclass(slots=True)
class SharedTicket(Ticket):
    """A ticket admitted by Redis: its id there and what its settlement must count."""

    tid: str = ""
    base: str = ""
    held: bool = False
    count_tpm: bool = False
    quota_key: str = ""
    quota_expire_ms: int = 0


@dataclass(slots=True)
class _Pending:
    """What one key used on local limits while Redis was away, to be added when it returns."""

    base: str
    quota_key: str
    window: list[tuple[float, int]]  # (when, tokens) of the last minute
    tokens: int = 0
    pico: int = 0


class RedisLimiter:
    """Admits and settles requests against limits shared through Redis; local shares while it is away."""

    def __init__(
        self, url: str, *, prefix: str = "nexusai:", timeout_s: float = 0.25, lease_s: float = 30.0,
        workers: int = 1, clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.prefix = prefix
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self.client = Resp(url, timeout_s)
        self._admit_lua = self.client.script((LUA / "admit.lua").read_text())
        self._settle_lua = self.client.script((LUA / "settle.lua").read_text())
        self._resync_lua = self.client.script((LUA / "resync.lua").read_text())
        self.instance = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._ids = itertools.count(1)
        self._seed: dict[int, tuple[str, float, int, Decimal]] = {}
        self._live: dict[str, SharedTicket] = {}  # held tickets of this process, renewed each lease third
        self.up = True
        self.instances = max(1, workers)  # processes sharing the limits, as last seen in Redis
        self.failures = 0  # calls that failed (a metric)
        self.last_error: str | None = None
        self._local = MemoryLimiter(clock=lambda: self.clock())
        self._pending: dict[int, _Pending] = {}
        self._periods: dict[int, str] = {}  # quota period of keys admitted locally
        self._tasks: list[asyncio.Task[None]] = []
        self.on_return: Callable[[], Awaitable[None]] | None = None  # e.g. fresh consumption from the database

    # --- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Announce this process and start renewing its leases (Redis away: start on local limits)."""
        try:
            await self._heartbeat()
            log.info("key limits shared through Redis by %d proxy process(es)", self.instances)
        except RedisTrouble as exc:
            self._fail(exc)
        self._tasks.append(asyncio.create_task(self._renew_loop(), name="redis-leases"))

    async def stop(self) -> None:
        """Stop renewing, give back this process's holds, close the connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self.up:
            try:
                await self.client.pipeline(
                    ("ZREM", self.prefix + "instances", self.instance),
                    *(("ZREM", t.base + "hold", t.tid) for t in self._live.values()),
                )
            except RedisTrouble:
                pass  # the leases run out on their own
        await self.client.close()

    def seed(self, consumption: Mapping[int, tuple[str, float, int, Decimal]]) -> None:
        """Recorded consumption per key from the latest snapshot: (period, period start, tokens, usd)."""
        self._seed.update(consumption)
        self._local.seed(consumption)

    # --- admission -------------------------------------------------------------------------------

    async def admit(self, key: KeyCfg, reserve_tokens: int, reserve_usd: Decimal) -> tuple[Ticket, dict[str, str]]:
        """Admit one request or raise a 429 naming the limit; returns the ticket and limit headers."""
        if not self.up:
            return self._admit_locally(key, reserve_tokens, reserve_usd)
        now = self.clock()
        now_ms = int(now * 1000)
        base = f"{self.prefix}{{k{key.id}}}:"
        quota_key, period_end, seed_tokens, seed_pico, expire_ms = "", math.inf, 0, 0, 0
        has_quota = bool(key.token_quota) or key.budget_usd is not None
        if has_quota:
            start, end = period_bounds(key.quota_period, datetime.fromtimestamp(now, timezone.utc))
            quota_key = f"{base}q:{key.quota_period}:{int(start.timestamp())}"
            seeded = self._seed.get(key.id)
            if seeded is not None and seeded[0] == key.quota_period and seeded[1] == start.timestamp():
                seed_tokens, seed_pico = seeded[2], pico(seeded[3])
            if end is not None:
                period_end = end.timestamp()
                expire_ms = int((end + QUOTA_KEEP).timestamp() * 1000)
        held = bool(key.max_concurrency or key.tpm or has_quota)
        tid = f"{self.instance}:{next(self._ids)}"
        reserve_pico = pico(reserve_usd)
        try:
            answer = await self.client.evalsha(
                self._admit_lua,
                (base + "req", base + "tok", base + "tsum", base + "hold", base + "res", quota_key or base + "q"),
                (now_ms, tid, key.rpm or 0, key.tpm or 0, key.max_concurrency or 0,
                 key.token_quota if key.token_quota else -1,
                 pico(key.budget_usd) if key.budget_usd is not None else -1,
                 reserve_tokens, reserve_pico, int(self.lease_s * 1000), seed_tokens, seed_pico,
                 expire_ms, 1 if held else 0),
            )
        except RedisTrouble as exc:
            self._fail(exc)
            return self._admit_locally(key, reserve_tokens, reserve_usd)
        refused, admitted, oldest_ms, window, tok_oldest_ms = (int(v) for v in answer[:5])
        if refused:
            limit = REFUSALS[refused]
            if limit == "rpm":
                wait = oldest_ms / 1000 + WINDOW_S - now
            elif limit == "tpm":
                wait = tok_oldest_ms / 1000 + WINDOW_S - now if tok_oldest_ms else 1.0
            else:
                wait = 1.0 if limit == "concurrency" else period_end - now
            raise refusal(key, limit, wait)
        ticket = SharedTicket(key.id, reserve_tokens, reserve_usd, tid=tid, base=base, held=held,
                              count_tpm=bool(key.tpm), quota_key=quota_key, quota_expire_ms=expire_ms)
        if held:
            self._live[tid] = ticket
        return ticket, limit_headers(key, now, admitted, oldest_ms / 1000 if oldest_ms else None, window,
                                     tok_oldest_ms / 1000 if tok_oldest_ms else None)

    # --- settlement ------------------------------------------------------------------------------

    async def settle(self, ticket: Ticket, tokens: int, cost: Decimal) -> None:
        """Replace the ticket's reservation with what the request really used (once)."""
        if ticket.settled:
            return
        if not isinstance(ticket, SharedTicket):  # admitted on local limits
            self._local.settle_now(ticket, tokens, cost)
            self._note_local_use(ticket.key_id, tokens, cost)
            return
        ticket.settled = True
        self._live.pop(ticket.tid, None)
        if not ticket.held:
            return
        count_quota = bool(ticket.quota_key)
        base = ticket.base
        if not self.up:
            self._note_use(ticket.key_id, base, ticket.quota_key, tokens, cost)
            return
        try:
            await self.client.evalsha(
                self._settle_lua,
                (base + "hold", base + "res", base + "tok", base + "tsum", ticket.quota_key or base + "q"),
                (int(self.clock() * 1000), ticket.tid, tokens, pico(cost), 1 if ticket.count_tpm else 0,
                 1 if count_quota else 0, ticket.quota_expire_ms),
            )
        except RedisTrouble as exc:
            # Its hold runs out with the lease; its usage is added when Redis returns.
            self._fail(exc)
            self._note_use(ticket.key_id, base, ticket.quota_key, tokens, cost)

    async def release(self, ticket: Ticket | None) -> None:
        """Free a ticket that will never be settled with usage (safety net, idempotent)."""
        if ticket is not None and not ticket.detached:
            await self.settle(ticket, 0, ZERO_USD)

    # --- Redis away: local shares ----------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if self.up:
            self.up = False
            self._local = MemoryLimiter(clock=lambda: self.clock())
            self._local.seed(self._seed)
            log.warning("Redis is unreachable (%s): enforcing local shares of every key's limits "
                        "(1/%d each) until it returns", self.last_error, self.instances)

    def _admit_locally(self, key: KeyCfg, reserve_tokens: int, reserve_usd: Decimal) -> tuple[Ticket, dict[str, str]]:
        ticket, headers = self._local.admit_now(self._share(key), reserve_tokens, reserve_usd)
        if key.token_quota or key.budget_usd is not None:
            self._periods[key.id] = key.quota_period
        return ticket, headers

    def _share(self, key: KeyCfg) -> KeyCfg:
        """The key with each limit cut to this process's share of it."""
        n = self.instances
        if n <= 1:
            return key

        def part(limit: int | None) -> int | None:
            return None if not limit else max(1, math.ceil(limit / n))

        quota = key.token_quota
        budget = key.budget_usd
        seeded = self._seed.get(key.id)
        used_tokens, used_usd = (seeded[2], seeded[3]) if seeded is not None else (0, ZERO_USD)
        if quota:
            quota = used_tokens + max(1, math.ceil(max(0, quota - used_tokens) / n))
        if budget is not None:
            budget = used_usd + max(ZERO_USD, budget - used_usd) / n
        return replace(key, rpm=part(key.rpm), tpm=part(key.tpm), max_concurrency=part(key.max_concurrency),
                       token_quota=quota, budget_usd=budget)

    def _note_local_use(self, key_id: int, tokens: int, cost: Decimal) -> None:
        base = f"{self.prefix}{{k{key_id}}}:"
        key_period = self._local_period(key_id)
        self._note_use(key_id, base, key_period, tokens, cost)

    def _local_period(self, key_id: int) -> str:
        period = self._periods.get(key_id)
        if period is None:
            return ""
        start, _ = period_bounds(period, datetime.fromtimestamp(self.clock(), timezone.utc))
        return f"{self.prefix}{{k{key_id}}}:q:{period}:{int(start.timestamp())}"

    def _note_use(self, key_id: int, base: str, quota_key: str, tokens: int, cost: Decimal) -> None:
        if not (tokens or cost):
            return
        pending = self._pending.get(key_id)
        if pending is None:
            pending = self._pending[key_id] = _Pending(base, quota_key, [])
        if tokens:
            now = self.clock()
            window = pending.window
            window.append((now, tokens))
            if window[0][0] <= now - WINDOW_S:
                pending.window = [entry for entry in window if entry[0] > now - WINDOW_S]
        pending.tokens += tokens
        pending.pico += pico(cost)

    async def _resync(self) -> None:
        """Add what was used locally to the shared figures (Redis is back)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        now = self.clock()
        now_ms = int(now * 1000)
        try:
            await self._add_uses(pending, now, now_ms)
        except BaseException:
            for key_id, use in pending.items():  # kept for the next try
                self._pending.setdefault(key_id, use)
            raise

    async def _add_uses(self, pending: dict[int, _Pending], now: float, now_ms: int) -> None:
        for key_id, use in pending.items():
            recent = sum(n for at, n in use.window if at > now - WINDOW_S)
            quota_key = use.quota_key or self._local_period(key_id) or use.base + "q"
            await self.client.evalsha(
                self._resync_lua, (use.base + "tok", use.base + "tsum", quota_key),
                (now_ms, f"{self.instance}:r{next(self._ids)}", recent, use.tokens, use.pico),
            )

    # --- background: leases, heartbeat, probe ----------------------------------------------------

    async def _heartbeat(self) -> None:
        now_ms = int(self.clock() * 1000)
        lease_ms = int(self.lease_s * 1000)
        instances = self.prefix + "instances"
        calls: list[tuple[object, ...]] = [
            ("ZADD", instances, now_ms + lease_ms, self.instance),
            ("ZREMRANGEBYSCORE", instances, "-inf", now_ms),
            ("ZCARD", instances),
        ]
        for ticket in self._live.values():  # pipelined: one round trip for all of them
            calls.append(("ZADD", ticket.base + "hold", "XX", now_ms + lease_ms, ticket.tid))
            calls.append(("PEXPIRE", ticket.base + "hold", lease_ms * 2))
            if ticket.reserved_tokens or ticket.reserved_usd:
                calls.append(("PEXPIRE", ticket.base + "res", lease_ms * 2))
        answers = await self.client.pipeline(*calls)
        self.instances = max(1, int(answers[2]))

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S if not self.up else self.lease_s / 3)
            try:
                if self.up:
                    await self._heartbeat()
                    if self._pending:
                        await self._resync()
                    continue
                await self.client.call("PING")
                await self._heartbeat()
                if self.on_return is not None:
                    try:
                        await self.on_return()
                    except Exception:  # noqa: BLE001 - periods Redis lost are then seeded from the last snapshot
                        log.warning("reloading the config after Redis came back failed", exc_info=True)
                await self._resync()
                self.up = True
                log.warning("Redis is back: key limits are shared again (%d proxy processes)", self.instances)
            except RedisTrouble as exc:
                self._fail(exc)
            except Exception:  # noqa: BLE001 - the renewals must go on
                log.exception("renewing Redis leases failed")

    def status(self) -> dict[str, Any]:
        """For readiness and metrics: whether limits are shared, and the last trouble."""
        # The reason without Redis's address: readiness is answered to anyone (the log has it all).
        reason = None if self.up or self.last_error is None else self.last_error.replace(self.client.where, "Redis")
        return {"backend": "redis" if self.up else "local", "instances": self.instances,
                "failures": self.failures, "last_error": reason}

