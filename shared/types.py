"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: identical on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to naive UTC before storing."""
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC on the way out."""
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class ScaledDecimal(TypeDecorator[Decimal]):
    """An exact Decimal with a fixed number of places, stored as a scaled integer.

    SQLite has no exact decimal type; storing integers keeps sums exact on both
    backends and lets SQL aggregate without float drift.
    """

    impl = BigInteger
    cache_ok = True

    def __init__(self, places: int) -> None:
        super().__init__()
        self.places = places
        self.factor = Decimal(10) ** places
        self.quantum = Decimal(1).scaleb(-places)

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        """Decimal (or int/str) -> scaled integer."""
        if value is None:
            return None
        dec = value if isinstance(value, Decimal) else Decimal(str(value))
        return int((dec * self.factor).to_integral_value(rounding=ROUND_HALF_UP))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        """Scaled integer -> Decimal."""
        if value is None:
            return None
        return (Decimal(int(value)) / self.factor).quantize(self.quantum)

    def from_scaled(self, value: Any) -> Decimal:
        """Convert a raw scaled integer (e.g. an SQL SUM) back to Decimal."""
        if value is None:
            return Decimal(0).quantize(self.quantum)
        return (Decimal(int(value)) / self.factor).quantize(self.quantum)


PRICE_PLACES = 6  # USD per 1M tokens
COST_PLACES = 12  # USD; price/1e6 * tokens is exact at 12 places

Price = ScaledDecimal(PRICE_PLACES)
Money = ScaledDecimal(COST_PLACES)
