"""SQL that builds the usage rollups and the triggers keeping them equal to usage_record.

Migrations import it with the grouping key (`dims`) and summed columns (`sums`)
of their revision, so each revision's triggers stay what they were when it
was written while later ones add a dimension or a sum. The bucket and latency
expressions are those of 0002's docstring; every sum is an integer (cost as its
scaled integer, latency as whole microseconds), so both backends agree exactly.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# How each summed column is read off one usage_record row (`{r}` is its alias); latency_us is special.
ROW_VALUE = {
    "requests": "1",
    "prompt_tokens": "{r}.prompt_tokens",
    "completion_tokens": "{r}.completion_tokens",
    "total_tokens": "{r}.total_tokens",
    "errors": "CASE WHEN {r}.status_code >= 400 THEN 1 ELSE 0 END",
    "cost_usd": "{r}.cost_usd",
    "cached_tokens": "{r}.cached_tokens",
    "cache_write_tokens": "{r}.cache_write_tokens",
    "reasoning_tokens": "{r}.reasoning_tokens",
}
# How each dimension is read off a usage_record row: no NULLs in a key.
SOURCE = {
    "key_id": "coalesce({r}.key_id, 0)",
    "provider_id": "coalesce({r}.provider_id, 0)",
    "provider_name": "coalesce({r}.provider_name, '')",
    "model": "{r}.model",
    "api": "{r}.api",
}
DIM_TYPES = {
    "key_id": sa.Integer,
    "provider_id": sa.Integer,
    "provider_name": lambda: sa.String(length=100),
    "model": lambda: sa.String(length=200),
    "api": lambda: sa.String(length=16),
}
# (table, bucket column, seconds per bucket, index on key and bucket)
TABLES = (
    ("usage_rollup", "hour", 3600, "ix_usage_rollup_key_hour"),
    ("usage_rollup_daily", "day", 86400, "ix_usage_rollup_daily_key_day"),
)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _bucket(row: str, seconds: int) -> str:
    if _postgres():
        return f"floor(extract(epoch FROM {row}.created_at) / {seconds})::bigint"
    return f"CAST(strftime('%s', substr({row}.created_at, 1, 19)) AS INTEGER) / {seconds}"


def _value(column: str, row: str) -> str:
    if column == "latency_us":
        if _postgres():
            return f"floor({row}.latency_ms * 1000 + 0.5)::bigint"
        return f"CAST({row}.latency_ms * 1000 + 0.5 AS INTEGER)"
    return ROW_VALUE[column].format(r=row)


def _grouped_select(seconds: int, dims: tuple[str, ...], sums: tuple[str, ...], source: str) -> str:
    keys = ", ".join(SOURCE[d].format(r="r") for d in dims)
    totals = ", ".join(f"sum({_value(c, 'r')})" for c in sums)
    positions = ", ".join(str(n) for n in range(1, len(dims) + 2))
    return f"SELECT {_bucket('r', seconds)}, {keys}, {totals} FROM {source} AS r GROUP BY {positions}"


def _sqlite_add(table: str, bucket: str, seconds: int, dims: tuple[str, ...], sums: tuple[str, ...],
                row: str) -> str:
    updates = ", ".join(f"{c} = {c} + excluded.{c}" for c in sums)
    keys = ", ".join(SOURCE[d].format(r=row) for d in dims)
    values = ", ".join(_value(c, row) for c in sums)
    columns = ", ".join((bucket, *dims, *sums))
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({_bucket(row, seconds)}, {keys}, {values}) "
        f"ON CONFLICT ({bucket}, {', '.join(dims)}) DO UPDATE SET {updates};"
    )


def _sqlite_remove(table: str, bucket: str, seconds: int, dims: tuple[str, ...], sums: tuple[str, ...],
                   row: str) -> str:
    where = " AND ".join([f"{bucket} = {_bucket(row, seconds)}"]
                         + [f"{d} = {SOURCE[d].format(r=row)}" for d in dims])
    updates = ", ".join(f"{c} = {c} - ({_value(c, row)})" for c in sums)
    return f"UPDATE {table} SET {updates} WHERE {where}; DELETE FROM {table} WHERE {where} AND requests = 0;"


def _pg_add(table: str, bucket: str, seconds: int, dims: tuple[str, ...], sums: tuple[str, ...],
            source: str) -> str:
    updates = ", ".join(f"{c} = u.{c} + EXCLUDED.{c}" for c in sums)
    columns = ", ".join((bucket, *dims, *sums))
    order = ", ".join(str(n) for n in range(1, len(dims) + 2))
    # Sorted, so concurrent writers lock rollup rows in the same order (no deadlocks).
    return (
        f"INSERT INTO {table} AS u ({columns}) {_grouped_select(seconds, dims, sums, source)} ORDER BY {order} "
        f"ON CONFLICT ({bucket}, {', '.join(dims)}) DO UPDATE SET {updates};"
    )


def _pg_remove(table: str, bucket: str, seconds: int, dims: tuple[str, ...], sums: tuple[str, ...],
               source: str) -> str:
    updates = ", ".join(f"{c} = u.{c} - d.{c}" for c in sums)
    match = " AND ".join(f"u.{c} = d.{c}" for c in (bucket, *dims))
    names = ", ".join((bucket, *dims, *sums))
    return (
        f"UPDATE {table} AS u SET {updates} FROM ({_grouped_select(seconds, dims, sums, source)}) "
        f"AS d ({names}) WHERE {match}; DELETE FROM {table} WHERE requests = 0;"
    )


def install_triggers(dims: tuple[str, ...], sums: tuple[str, ...]) -> None:
    """(Re)create the triggers keeping both rollups equal to usage_record, keyed by `dims`, summing `sums`."""
    targets = [(table, bucket, seconds, dims, sums) for table, bucket, seconds, _ in TABLES]
    if _postgres():
        bodies = {
            "usage_rollup_on_insert": " ".join(_pg_add(*t, "new_rows") for t in targets),
            "usage_rollup_on_delete": " ".join(_pg_remove(*t, "old_rows") for t in targets),
            "usage_rollup_on_update": " ".join(
                _pg_remove(*t, "old_rows") + " " + _pg_add(*t, "new_rows") for t in targets),
            "usage_rollup_on_truncate": " ".join(f"DELETE FROM {t[0]};" for t in targets),
        }
        # The triggers of 0002 call these functions by name; replacing the bodies is enough.
        for name, body in bodies.items():
            op.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                       f"BEGIN {body} RETURN NULL; END $$")
        return
    events = {
        "usage_rollup_on_insert": ("AFTER INSERT ON usage_record",
                                   " ".join(_sqlite_add(*t, "NEW") for t in targets)),
        "usage_rollup_on_delete": ("AFTER DELETE ON usage_record",
                                   " ".join(_sqlite_remove(*t, "OLD") for t in targets)),
        "usage_rollup_on_update": ("AFTER UPDATE ON usage_record",
                                   " ".join(_sqlite_remove(*t, "OLD") for t in targets) + " "
                                   + " ".join(_sqlite_add(*t, "NEW") for t in targets)),
    }
    for name, (event, body) in events.items():
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute(f"CREATE TRIGGER {name} {event} FOR EACH ROW BEGIN {body} END")


def rebuild_rollups(dims: tuple[str, ...], sums: tuple[str, ...]) -> None:
    """Recreate both rollups keyed by `dims` with columns `sums`, fill them from usage_record, install triggers."""
    for table, bucket, seconds, index in TABLES:
        op.drop_table(table)
        columns = [sa.Column(bucket, sa.BigInteger(), nullable=False)]
        columns += [sa.Column(d, DIM_TYPES[d](), nullable=False) for d in dims]
        columns += [sa.Column(name, sa.BigInteger(), nullable=False) for name in sums]
        op.create_table(table, *columns, sa.PrimaryKeyConstraint(bucket, *dims, name=op.f(f"pk_{table}")))
        op.create_index(index, table, ["key_id", bucket], unique=False)
        names = ", ".join((bucket, *dims, *sums))
        op.execute(f"INSERT INTO {table} ({names}) {_grouped_select(seconds, dims, sums, 'usage_record')}")
    install_triggers(dims, sums)
