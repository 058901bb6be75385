"""Quota periods (total, daily, monthly) with UTC boundaries, and per-key consumption."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import UsageRollupDaily
from shared.types import Money

PERIODS = ("total", "daily", "monthly")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime | None]:
    """Start (inclusive) and end (exclusive; None for `total`) of the period holding `now`."""
    now = now.astimezone(timezone.utc)
    if period == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "monthly":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    return EPOCH, None


def consumption(session: Session, periods: Mapping[int, str], now: datetime) -> dict[int, tuple[int, Decimal]]:
    """Tokens and USD each key used in its current period, from the usage records."""
    out: dict[int, tuple[int, Decimal]] = {}
    by_period: dict[str, list[int]] = {}
    for key_id, period in periods.items():
        by_period.setdefault(period if period in PERIODS else "total", []).append(key_id)
    # Periods start at UTC midnight, so whole days of the daily rollup (kept equal to usage_record by
    # triggers) give exact sums without reading a key's raw history.
    daily = UsageRollupDaily
    for period, key_ids in by_period.items():
        start, _ = period_bounds(period, now)
        stmt = (
            select(daily.key_id, func.sum(daily.total_tokens), func.sum(daily.cost_usd))
            .where(daily.key_id.in_(key_ids))
            .group_by(daily.key_id)
        )
        if period != "total":
            stmt = stmt.where(daily.day >= int((start - EPOCH).total_seconds()) // 86400)
        for key_id, tokens, cost in session.execute(stmt):
            # SUM keeps the column type, so `cost` is already an exact Decimal.
            out[int(key_id)] = (int(tokens or 0), cost if cost is not None else Money.from_scaled(0))
    for key_id in periods:
        out.setdefault(key_id, (0, Money.from_scaled(0)))
    return out
