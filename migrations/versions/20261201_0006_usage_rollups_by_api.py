"""usage rollups by client API

Reports break down by the client API spoken (chat, responses, embeddings,
completions, messages, ws), so `api` joins the key of `usage_rollup` and
`usage_rollup_daily`, and a latency-ordered covering index on
(api, latency_ms, ...) serves the per-API p95 as the others serve theirs.

Both rollups are rebuilt from `usage_record` (they are sums of it, so nothing is
lost), and the triggers of 0002/0003 are replaced by ones that write the API too,
with the same bucket and latency expressions (see 0002's docstring). Downgrading
rebuilds them without the API.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "cost_usd", "latency_us")
OLD_DIMS = ("key_id", "provider_id", "provider_name", "model")
NEW_DIMS = (*OLD_DIMS, "api")
# (table, bucket column, seconds per bucket, index on key and bucket)
TABLES = (
    ("usage_rollup", "hour", 3600, "ix_usage_rollup_key_hour"),
    ("usage_rollup_daily", "day", 86400, "ix_usage_rollup_daily_key_day"),
)
# How each dimension is read off a usage_record row (`{r}` is its alias): no NULLs in a key.
SOURCE = {
    "key_id": "coalesce({r}.key_id, 0)",
    "provider_id": "coalesce({r}.provider_id, 0)",
    "provider_name": "coalesce({r}.provider_name, '')",
    "model": "{r}.model",
    "api": "{r}.api",
}


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _bucket(row: str, seconds: int) -> str:
    if _postgres():
        return f"floor(extract(epoch FROM {row}.created_at) / {seconds})::bigint"
    return f"CAST(strftime('%s', substr({row}.created_at, 1, 19)) AS INTEGER) / {seconds}"


def _latency_us(row: str) -> str:
    if _postgres():
        return f"floor({row}.latency_ms * 1000 + 0.5)::bigint"
    return f"CAST({row}.latency_ms * 1000 + 0.5 AS INTEGER)"


def _grouped_select(bucket: str, seconds: int, dims: tuple[str, ...], source: str) -> str:
    keys = ", ".join(SOURCE[d].format(r="r") for d in dims)
    positions = ", ".join(str(n) for n in range(1, len(dims) + 2))
    return (
        f"SELECT {_bucket('r', seconds)}, {keys}, count(*), sum(r.prompt_tokens), sum(r.completion_tokens), "
        f"sum(r.total_tokens), sum(CASE WHEN r.status_code >= 400 THEN 1 ELSE 0 END), sum(r.cost_usd), "
        f"sum({_latency_us('r')}) FROM {source} AS r GROUP BY {positions}"
    )


def _sqlite_add(table: str, bucket: str, seconds: int, dims: tuple[str, ...], row: str) -> str:
    updates = ", ".join(f"{c} = {c} + excluded.{c}" for c in SUMS)
    keys = ", ".join(SOURCE[d].format(r=row) for d in dims)
    values = (
        f"{_bucket(row, seconds)}, {keys}, 1, {row}.prompt_tokens, {row}.completion_tokens, {row}.total_tokens, "
        f"{row}.status_code >= 400, {row}.cost_usd, {_latency_us(row)}"
    )
    columns = ", ".join((bucket, *dims, *SUMS))
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({values}) "
        f"ON CONFLICT ({bucket}, {', '.join(dims)}) DO UPDATE SET {updates};"
    )


def _sqlite_remove(table: str, bucket: str, seconds: int, dims: tuple[str, ...], row: str) -> str:
    where = " AND ".join([f"{bucket} = {_bucket(row, seconds)}"]
                         + [f"{d} = {SOURCE[d].format(r=row)}" for d in dims])
    return (
        f"UPDATE {table} SET requests = requests - 1, prompt_tokens = prompt_tokens - {row}.prompt_tokens, "
        f"completion_tokens = completion_tokens - {row}.completion_tokens, "
        f"total_tokens = total_tokens - {row}.total_tokens, errors = errors - ({row}.status_code >= 400), "
        f"cost_usd = cost_usd - {row}.cost_usd, latency_us = latency_us - {_latency_us(row)} WHERE {where}; "
        f"DELETE FROM {table} WHERE {where} AND requests = 0;"
    )


def _pg_add(table: str, bucket: str, seconds: int, dims: tuple[str, ...], source: str) -> str:
    updates = ", ".join(f"{c} = u.{c} + EXCLUDED.{c}" for c in SUMS)
    columns = ", ".join((bucket, *dims, *SUMS))
    order = ", ".join(str(n) for n in range(1, len(dims) + 2))
    # Sorted, so concurrent writers lock rollup rows in the same order (no deadlocks).
    return (
        f"INSERT INTO {table} AS u ({columns}) {_grouped_select(bucket, seconds, dims, source)} ORDER BY {order} "
        f"ON CONFLICT ({bucket}, {', '.join(dims)}) DO UPDATE SET {updates};"
    )


def _pg_remove(table: str, bucket: str, seconds: int, dims: tuple[str, ...], source: str) -> str:
    updates = ", ".join(f"{c} = u.{c} - d.{c}" for c in SUMS)
    match = " AND ".join(f"u.{c} = d.{c}" for c in (bucket, *dims))
    names = ", ".join((bucket, *dims, *SUMS))
    return (
        f"UPDATE {table} AS u SET {updates} FROM ({_grouped_select(bucket, seconds, dims, source)}) "
        f"AS d ({names}) WHERE {match}; DELETE FROM {table} WHERE requests = 0;"
    )


def _install(dims: tuple[str, ...]) -> None:
    """(Re)create the triggers keeping both rollups equal to usage_record, keyed by `dims`."""
    targets = [(table, bucket, seconds) for table, bucket, seconds, _ in TABLES]
    if _postgres():
        bodies = {
            "usage_rollup_on_insert": " ".join(_pg_add(*t, dims, "new_rows") for t in targets),
            "usage_rollup_on_delete": " ".join(_pg_remove(*t, dims, "old_rows") for t in targets),
            "usage_rollup_on_update": " ".join(
                _pg_remove(*t, dims, "old_rows") + " " + _pg_add(*t, dims, "new_rows") for t in targets),
            "usage_rollup_on_truncate": " ".join(f"DELETE FROM {t[0]};" for t in targets),
        }
        # The triggers of 0002 call these functions by name; replacing the bodies is enough.
        for name, body in bodies.items():
            op.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                       f"BEGIN {body} RETURN NULL; END $$")
        return
    events = {
        "usage_rollup_on_insert": ("AFTER INSERT ON usage_record",
                                   " ".join(_sqlite_add(*t, dims, "NEW") for t in targets)),
        "usage_rollup_on_delete": ("AFTER DELETE ON usage_record",
                                   " ".join(_sqlite_remove(*t, dims, "OLD") for t in targets)),
        "usage_rollup_on_update": ("AFTER UPDATE ON usage_record",
                                   " ".join(_sqlite_remove(*t, dims, "OLD") for t in targets) + " "
                                   + " ".join(_sqlite_add(*t, dims, "NEW") for t in targets)),
    }
    for name, (event, body) in events.items():
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute(f"CREATE TRIGGER {name} {event} FOR EACH ROW BEGIN {body} END")


def _rebuild(dims: tuple[str, ...]) -> None:
    """Recreate both rollups keyed by `dims` and fill them from usage_record."""
    for table, bucket, seconds, index in TABLES:
        op.drop_table(table)
        columns = [sa.Column(bucket, sa.BigInteger(), nullable=False),
                   sa.Column("key_id", sa.Integer(), nullable=False),
                   sa.Column("provider_id", sa.Integer(), nullable=False),
                   sa.Column("provider_name", sa.String(length=100), nullable=False),
                   sa.Column("model", sa.String(length=200), nullable=False)]
        if "api" in dims:
            columns.append(sa.Column("api", sa.String(length=16), nullable=False))
        columns += [sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS]
        op.create_table(table, *columns, sa.PrimaryKeyConstraint(bucket, *dims, name=op.f(f"pk_{table}")))
        op.create_index(index, table, ["key_id", bucket], unique=False)
        names = ", ".join((bucket, *dims, *SUMS))
        op.execute(f"INSERT INTO {table} ({names}) {_grouped_select(bucket, seconds, dims, 'usage_record')}")
    _install(dims)


def upgrade():
    _rebuild(NEW_DIMS)
    op.create_index("ix_usage_record_api_latency", "usage_record",
                    ["api", "latency_ms", "created_at", "key_id", "provider_id", "model"], unique=False)


def downgrade():
    op.drop_index("ix_usage_record_api_latency", table_name="usage_record")
    _rebuild(OLD_DIMS)
