"""Usage figures for reports: exact sums from the rollups, exact p95s from the raw rows.

Sums (requests, tokens and their cached, cache-write and reasoning parts, errors,
cost, latency) come from `usage_rollup_daily` and `usage_rollup` (hourly), which
database triggers keep equal to `usage_record` (migrations 0002, 0003; 0006 adds
the client API to their key, 0008 the token parts). A window reads whole UTC days
from the daily table, whole hours at its ends from the hourly one, and only its
partial hours from the raw rows, so any window costs a few thousand rollup rows plus
at most two hours of raw rows. Conversation figures have no rollup and are
summed from the raw rows.

Every sum is an integer in SQL (cost as scaled 12-place integers, latency as
whole microseconds: floor(ms * 1000 + 0.5)), so SQLite and PostgreSQL agree
to the last digit. Daily buckets are UTC days.

p95 is the nearest-rank percentile of the recorded `latency_ms` values: with
n requests, the value at rank ceil(0.95 n) in ascending order, i.e. offset
n - ceil(0.95 n) from the top. It is read by walking a latency-ordered
covering index from the top (`ORDER BY latency_ms DESC LIMIT 1 OFFSET k`):
about 5% of a group's rows, never a sort of the window. SQLite is told which
index to walk (INDEXED BY); PostgreSQL's planner chooses. The value returned
is a stored value, so it is identical on both backends.

Reads of one report should share a snapshot (`begin_snapshot`), or rows
written between the sums and the p95 walk would shift the rank.

Imports SQLAlchemy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    FromClause,
    Integer,
    Select,
    and_,
    case,
    cast,
    false,
    func,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import Alias

from shared.models import Provider, UsageRecord, UsageRollup, UsageRollupDaily
from shared.types import COST_PLACES

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_DAY = EPOCH.date()
HOUR_S = 3600
UNKNOWN_PROVIDER = "unknown"
NO_KEY = "none"
P95_RANK = 95

LATENCY_INDEX = "ix_usage_record_latency"
KEY_LATENCY_INDEX = "ix_usage_record_key_latency"
MODEL_LATENCY_INDEX = "ix_usage_record_model_latency"
API_LATENCY_INDEX = "ix_usage_record_api_latency"
CONVERSATION_INDEX = "ix_usage_record_conversation_id"

_COST_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
_RATE_QUANTUM = Decimal("0.01")
_MS_QUANTUM = Decimal("0.001")


# --- windows and sums ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Which usage rows a report covers: [start, end_before) plus optional equality filters."""

    start: datetime | None = None
    end_before: datetime | None = None
    key_id: int | None = None
    provider_id: int | None = None
    model: str | None = None
    conversation_id: str | None = None


@dataclass
class Sums:
    """Integer sums over a set of usage rows; `cost_scaled` is USD * 10**12."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    errors: int = 0
    cost_scaled: int = 0
    latency_us: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: Sums) -> None:
        """Add `other` into these sums."""
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.errors += other.errors
        self.cost_scaled += other.cost_scaled
        self.latency_us += other.latency_us
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens

    @property
    def cost(self) -> Decimal:
        """The exact cost in USD, 12 places."""
        return (Decimal(self.cost_scaled) * _COST_QUANTUM).quantize(_COST_QUANTUM)

    @property
    def success_rate(self) -> float | None:
        """Percent of requests answered below 400, two places; None without requests."""
        if not self.requests:
            return None
        rate = Decimal((self.requests - self.errors) * 100) / Decimal(self.requests)
        return float(rate.quantize(_RATE_QUANTUM, rounding=ROUND_HALF_UP))

    @property
    def avg_latency_ms(self) -> float | None:
        """Mean latency in ms (each latency taken to the microsecond), three places."""
        if not self.requests:
            return None
        mean = Decimal(self.latency_us) / Decimal(self.requests) / 1000
        return float(mean.quantize(_MS_QUANTUM, rounding=ROUND_HALF_UP))

    def figures(self, p95_ms: float | None = None, *, with_p95: bool = True) -> dict[str, Any]:
        """The figures of the admin API for these sums."""
        body: dict[str, Any] = {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "errors": self.errors,
            "cost_usd": cost_number(self.cost),
            "cost_usd_exact": cost_text(self.cost),
            "success_rate": self.success_rate,
            "avg_latency_ms": self.avg_latency_ms,
        }
        if with_p95:
            body["p95_latency_ms"] = p95_ms
        return body


def cost_number(cost: Decimal) -> float | int:
    """A cost as a JSON number: the nearest double, whose shortest text is exact below $1000."""
    return 0 if not cost else float(cost)


def cost_text(cost: Decimal) -> str:
    """A cost as an exact decimal string with 12 places."""
    return f"{cost.quantize(_COST_QUANTUM):f}"


@dataclass(frozen=True)
class CellKey:
    """The grouping of one rollup cell: who, where, which model, and (optionally) which UTC day."""

    key_id: int | None
    provider_id: int | None
    provider_name: str | None
    model: str
    api: str | None = None  # the client API spoken (chat, responses, embeddings, …)
    day: int | None = None  # days since 1970-01-01


Cells = dict[CellKey, Sums]


# --- time buckets -------------------------------------------------------------------------------


def day_date(day: int) -> date:
    """Days since 1970-01-01 as a date."""
    return EPOCH_DAY + timedelta(days=day)


def date_day(value: date) -> int:
    """A date as days since 1970-01-01."""
    return (value - EPOCH_DAY).days


# --- SQL pieces ---------------------------------------------------------------------------------


def latency_us_sql(latency: ColumnElement[Any], dialect: Dialect) -> ColumnElement[Any]:
    """floor(latency_ms * 1000 + 0.5) as an integer: the same IEEE operations on both backends."""
    shifted = latency * 1000 + 0.5
    if dialect.name == "sqlite":
        return cast(shifted, Integer)  # truncation is floor for the non-negative latencies
    return cast(func.floor(shifted), BigInteger)


_PART_TOKENS = ("cached_tokens", "cache_write_tokens", "reasoning_tokens")


def _raw_sums_columns(dialect: Dialect) -> list[ColumnElement[Any]]:
    u = UsageRecord
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(u.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(u.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(u.total_tokens), 0).label("total_tokens"),
        func.coalesce(func.sum(case((u.status_code >= 400, 1), else_=0)), 0).label("errors"),
        # The raw scaled integers: exact on both backends, converted once in Python.
        func.coalesce(func.sum(type_coerce(u.cost_usd, BigInteger)), 0).label("cost_scaled"),
        func.coalesce(func.sum(latency_us_sql(u.latency_ms, dialect)), 0).label("latency_us"),
        *(func.coalesce(func.sum(getattr(u, name)), 0).label(name) for name in _PART_TOKENS),
    ]


def _rollup_sums_columns(r: type[UsageRollup] | type[UsageRollupDaily]) -> list[ColumnElement[Any]]:
    return [
        func.sum(r.requests).label("requests"),
        func.sum(r.prompt_tokens).label("prompt_tokens"),
        func.sum(r.completion_tokens).label("completion_tokens"),
        func.sum(r.total_tokens).label("total_tokens"),
        func.sum(r.errors).label("errors"),
        func.sum(type_coerce(r.cost_usd, BigInteger)).label("cost_scaled"),
        func.sum(r.latency_us).label("latency_us"),
        *(func.sum(getattr(r, name)).label(name) for name in _PART_TOKENS),
    ]


def _sums(row: Any) -> Sums:
    return Sums(
        requests=int(row.requests or 0),
        prompt_tokens=int(row.prompt_tokens or 0),
        completion_tokens=int(row.completion_tokens or 0),
        total_tokens=int(row.total_tokens or 0),
        errors=int(row.errors or 0),
        cost_scaled=int(row.cost_scaled or 0),
        latency_us=int(row.latency_us or 0),
        cached_tokens=int(row.cached_tokens or 0),
        cache_write_tokens=int(row.cache_write_tokens or 0),
        reasoning_tokens=int(row.reasoning_tokens or 0),
    )


def raw_conditions(
    t: FromClause, window: Window, start: datetime | None, end_before: datetime | None
) -> list[ColumnElement[bool]]:
    """Conditions on usage_record (or an alias `t` of it) for `window` limited to [start, end_before)."""
    c = t.c
    conditions: list[ColumnElement[bool]] = []
    if start is not None:
        conditions.append(c.created_at >= start)
    if end_before is not None:
        conditions.append(c.created_at < end_before)
    if window.key_id is not None:
        conditions.append(c.key_id == window.key_id)
    if window.provider_id is not None:
        conditions.append(c.provider_id == window.provider_id)
    if window.model is not None:
        conditions.append(c.model == window.model)
    if window.conversation_id is not None:
        conditions.append(c.conversation_id == window.conversation_id)
    return conditions


# --- sums per cell ------------------------------------------------------------------------------

ALL_DIMS = ("key_id", "provider_id", "provider_name", "model", "api")
_HOUR_US = HOUR_S * 1_000_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _us(instant: datetime) -> int:
    return (instant - EPOCH) // timedelta(microseconds=1)


def _instant(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def cells(
    session: Session, window: Window, *, by_day: bool = False, dims: Sequence[str] = ALL_DIMS
) -> Cells:
    """Sums of `window` per distinct `dims` (and UTC day); dimensions not asked for are None.

    [start, end) is cut into: the partial hour at the start (raw rows), whole
    hours up to the first midnight (hourly rollup), whole days (daily rollup),
    whole hours after the last midnight (hourly), the partial hour at the end (raw).
    """
    out: Cells = {}
    start, end = window.start, window.end_before
    if window.conversation_id is not None:
        if by_day:
            raise ValueError("conversation figures have no daily split")
        _add_raw(session, out, window, start, end, None, dims)
        return out
    if start is not None and end is not None and end <= start:
        return out
    start_us = None if start is None else _us(start)
    end_us = None if end is None else _us(end)
    low_hour = None if start_us is None else _ceil_div(start_us, _HOUR_US)  # first whole hour
    high_hour = None if end_us is None else end_us // _HOUR_US  # end of the last whole hour
    if low_hour is not None and high_hour is not None and low_hour > high_hour:
        # Inside one hour: raw rows only.
        _add_raw(session, out, window, start, end, high_hour // 24 if by_day else None, dims)
        return out
    if start_us is not None and low_hour is not None and low_hour * _HOUR_US != start_us:
        day = (low_hour - 1) // 24 if by_day else None
        _add_raw(session, out, window, start, _instant(low_hour * _HOUR_US), day, dims)
    if end_us is not None and high_hour is not None and high_hour * _HOUR_US != end_us:
        day = high_hour // 24 if by_day else None
        _add_raw(session, out, window, _instant(high_hour * _HOUR_US), end, day, dims)
    low_day = None if low_hour is None else _ceil_div(low_hour, 24)
    high_day = None if high_hour is None else high_hour // 24
    if low_day is not None and high_day is not None and low_day >= high_day:
        if low_hour is not None and high_hour is not None and low_hour < high_hour:
            _add_rollup(session, out, window, UsageRollup, low_hour, high_hour, by_day, dims)
        return out
    if low_hour is not None and low_day is not None and low_hour < low_day * 24:
        _add_rollup(session, out, window, UsageRollup, low_hour, low_day * 24, by_day, dims)
    _add_rollup(session, out, window, UsageRollupDaily, low_day, high_day, by_day, dims)
    if high_hour is not None and high_day is not None and high_day * 24 < high_hour:
        _add_rollup(session, out, window, UsageRollup, high_day * 24, high_hour, by_day, dims)
    return out


def _merge(out: Cells, key: CellKey, sums: Sums) -> None:
    if key in out:
        out[key].add(sums)
    else:
        out[key] = sums


def _cell_key(row: Any, dims: Sequence[str], day: int | None) -> CellKey:
    values = {d: (getattr(row, d) or None) if d in dims else None for d in ALL_DIMS}
    return CellKey(values["key_id"], values["provider_id"], values["provider_name"], values["model"] or "",
                   values["api"], day)


def _add_raw(
    session: Session, out: Cells, window: Window, start: datetime | None, end_before: datetime | None,
    day: int | None, dims: Sequence[str],
) -> None:
    u = UsageRecord
    dialect = session.get_bind().dialect
    columns = [getattr(u, d) for d in dims]
    query = select(*columns, *_raw_sums_columns(dialect)).where(*raw_conditions(u.__table__, window, start, end_before))
    if columns:
        query = query.group_by(*columns)
    for row in session.execute(query):
        if row.requests:
            _merge(out, _cell_key(row, dims, day), _sums(row))


def _add_rollup(
    session: Session, out: Cells, window: Window, table: type[UsageRollup] | type[UsageRollupDaily],
    low: int | None, high: int | None, by_day: bool, dims: Sequence[str],
) -> None:
    """Rollup rows with bucket in [low, high) (hours or days, per `table`)."""
    bucket = table.hour if table is UsageRollup else table.day  # type: ignore[union-attr]
    columns: list[ColumnElement[Any]] = [getattr(table, d) for d in dims]
    if by_day:
        columns.append((bucket // 24 if table is UsageRollup else bucket).label("bucket_day"))
    conditions: list[ColumnElement[bool]] = []
    if low is not None:
        conditions.append(bucket >= low)
    if high is not None:
        conditions.append(bucket < high)
    if window.key_id is not None:
        conditions.append(table.key_id == window.key_id)
    if window.provider_id is not None:
        conditions.append(table.provider_id == window.provider_id)
    if window.model is not None:
        conditions.append(table.model == window.model)
    query = select(*columns, *_rollup_sums_columns(table)).where(*conditions)
    if columns:
        query = query.group_by(*columns)
    for row in session.execute(query):
        if row.requests:
            day = int(row.bucket_day) if by_day else None
            _merge(out, _cell_key(row, dims, day), _sums(row))


# --- breakdowns ---------------------------------------------------------------------------------


@dataclass
class Group:
    """One line of a breakdown: its sums and the rows it stands for (for its p95)."""

    dimension: str  # "total", "key", "model", "provider" or "api"
    sums: Sums = field(default_factory=Sums)
    key_id: int | None = None
    model: str | None = None
    api: str | None = None
    pairs: set[tuple[int | None, str | None]] = field(default_factory=set)  # provider (id, recorded name)

    def add(self, key: CellKey, sums: Sums) -> None:
        """Count one cell into this group."""
        self.sums.add(sums)
        if self.dimension == "provider":
            self.pairs.add((key.provider_id, key.provider_name))


@dataclass
class Breakdown:
    """Totals of a window and the same figures per key, model, provider and client API."""

    total: Group
    by_key: dict[str, Group]
    by_model: dict[str, Group]
    by_provider: dict[str, Group]
    by_api: dict[str, Group]

    def groups(self) -> Iterable[Group]:
        """Every group, total first."""
        yield self.total
        yield from self.by_key.values()
        yield from self.by_model.values()
        yield from self.by_provider.values()
        yield from self.by_api.values()


def key_label(key_id: int | None) -> str:
    """The by_key label of a key id."""
    return NO_KEY if key_id is None else str(key_id)


def provider_names(session: Session) -> dict[int, str]:
    """Current provider names by id, for rows recorded without one."""
    return {int(pid): name for pid, name in session.execute(select(Provider.id, Provider.name))}


def provider_label(key: CellKey, names: dict[int, str]) -> str:
    """The recorded provider name, else the provider's current name, else 'unknown'."""
    if key.provider_name:
        return key.provider_name
    if key.provider_id is not None and key.provider_id in names:
        return names[key.provider_id]
    return UNKNOWN_PROVIDER


def breakdown(cell_sums: Cells, names: dict[int, str]) -> Breakdown:
    """Fold cells into totals and per-key, per-model, per-provider and per-API groups (sorted labels)."""
    total = Group("total")
    by_key: dict[str, Group] = {}
    by_model: dict[str, Group] = {}
    by_provider: dict[str, Group] = {}
    by_api: dict[str, Group] = {}
    for key, sums in cell_sums.items():
        total.add(key, sums)
        by_key.setdefault(key_label(key.key_id), Group("key", key_id=key.key_id)).add(key, sums)
        by_model.setdefault(key.model, Group("model", model=key.model)).add(key, sums)
        by_provider.setdefault(provider_label(key, names), Group("provider")).add(key, sums)
        if key.api is not None:
            by_api.setdefault(key.api, Group("api", api=key.api)).add(key, sums)
    return Breakdown(
        total,
        dict(sorted(by_key.items())),
        dict(sorted(by_model.items())),
        dict(sorted(by_provider.items())),
        dict(sorted(by_api.items())),
    )


# --- p95 ----------------------------------------------------------------------------------------


class IndexedTable(Alias):
    """usage_record named as itself, rendered on SQLite with `INDEXED BY <index>`."""

    inherit_cache = False  # the index name is not part of the cache key
    index_name: str = ""


@compiles(IndexedTable, "sqlite")
def _indexed_by(element: IndexedTable, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.visit_alias(element, **kw)
    if kw.get("asfrom") and element.index_name:
        text += f" INDEXED BY {element.index_name}"
    return text


def _usage_table(index_name: str | None) -> FromClause:
    if not index_name:
        return UsageRecord.__table__
    table = IndexedTable._construct(UsageRecord.__table__, name=UsageRecord.__tablename__)
    table.index_name = index_name
    return table


def nearest_rank_offset(n: int, percentile: int = P95_RANK) -> int:
    """Offset from the largest value of the nearest-rank percentile of n values (n >= 1)."""
    rank = (percentile * n + 99) // 100  # ceil(p * n / 100), in integers
    return n - rank


def _index_for(group: Group, window: Window) -> str | None:
    if window.conversation_id is not None:
        # A conversation's rows, found through its own index and sorted: without ANALYZE statistics
        # SQLite would rather walk a latency index for the ORDER BY, past millions of other rows.
        return CONVERSATION_INDEX
    if group.dimension == "key":
        return KEY_LATENCY_INDEX
    if group.dimension == "model":
        return MODEL_LATENCY_INDEX
    if group.dimension == "api":
        return API_LATENCY_INDEX
    if group.dimension == "total" and window.key_id is not None:
        return KEY_LATENCY_INDEX
    if group.dimension == "total" and window.model is not None:
        return MODEL_LATENCY_INDEX
    return LATENCY_INDEX


def _group_conditions(t: FromClause, group: Group) -> list[ColumnElement[bool]]:
    c = t.c
    if group.dimension == "key":
        return [c.key_id.is_(None) if group.key_id is None else c.key_id == group.key_id]
    if group.dimension == "model":
        return [c.model == group.model]
    if group.dimension == "api":
        return [c.api == group.api]
    if group.dimension == "provider":
        terms = [
            and_(
                c.provider_id.is_(None) if pid is None else c.provider_id == pid,
                c.provider_name.is_(None) if name is None else c.provider_name == name,
            )
            for pid, name in sorted(group.pairs, key=lambda p: (p[0] or 0, p[1] or ""))
        ]
        return [or_(*terms) if terms else false()]
    return []


def p95_query(
    session: Session, window: Window, group: Group, percentile: int = P95_RANK
) -> Select[Any] | None:
    """The query reading `group`'s p95 (or other nearest-rank percentile) latency; None for an empty group."""
    n = group.sums.requests
    if n <= 0:
        return None
    index = _index_for(group, window) if session.get_bind().dialect.name == "sqlite" else None
    t = _usage_table(index)
    return (
        select(t.c.latency_ms)
        .where(*raw_conditions(t, window, window.start, window.end_before), *_group_conditions(t, group))
        .order_by(t.c.latency_ms.desc())
        .limit(1)
        .offset(nearest_rank_offset(n, percentile))
    )


def p95(session: Session, window: Window, group: Group, percentile: int = P95_RANK) -> float | None:
    """The nearest-rank p95 (or `percentile`) of `group`'s latencies in `window` (None without requests)."""
    query = p95_query(session, window, group, percentile)
    if query is None:
        return None
    value = session.execute(query).scalar()
    return None if value is None else float(value)


def p95s(session: Session, window: Window, groups: Sequence[Group]) -> list[float | None]:
    """The p95 of each group, in order."""
    return [p95(session, window, group) for group in groups]


def begin_snapshot(session: Session) -> None:
    """Make the following reads of `session` see one snapshot (sums, then p95s); call it first."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return
    connection = session.connection()
    raw = connection.connection.dbapi_connection
    # pysqlite opens no transaction for reads; an explicit one pins the WAL snapshot.
    if connection.dialect.name == "sqlite" and raw is not None and not raw.in_transaction:  # type: ignore[attr-defined]
        connection.exec_driver_sql("BEGIN")
