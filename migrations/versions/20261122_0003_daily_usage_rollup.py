"""daily usage rollup

Adds `usage_rollup_daily` (the sums of `usage_rollup` per UTC day), fills it
from the hourly rollup, and replaces 0002's triggers with ones that keep both
tables equal to `usage_record`. An hourly table alone grows almost as large as
the raw rows on a busy history (one row per hour x key x provider x model);
long windows now read whole days, and hours only at their ends.

Generated with `alembic revision --autogenerate`, then edited by hand: the
money column is a plain BigInteger (no custom types in migrations) and the
trigger SQL is written per dialect, with the same bucket and latency
expressions as 0002 (see its docstring). Downgrading restores 0002's
hourly-only triggers.

Note for later migrations: on SQLite a batch "move and copy" of usage_record
drops its triggers; recreate them after any such migration.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 06:00:32.005881

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "cost_usd", "latency_us")
DIMS = ("key_id", "provider_id", "provider_name", "model")
# (table, bucket column, seconds per bucket)
HOURLY = ("usage_rollup", "hour", 3600)
DAILY = ("usage_rollup_daily", "day", 86400)
TRIGGERS = ("usage_rollup_on_insert", "usage_rollup_on_delete", "usage_rollup_on_update")


def _columns(bucket: str) -> str:
    return ", ".join((bucket, *DIMS, *SUMS))


def _sqlite_bucket(row: str, seconds: int) -> str:
    return f"CAST(strftime('%s', substr({row}.created_at, 1, 19)) AS INTEGER) / {seconds}"


def _sqlite_latency_us(row: str) -> str:
    return f"CAST({row}.latency_ms * 1000 + 0.5 AS INTEGER)"


def _pg_bucket(row: str, seconds: int) -> str:
    return f"floor(extract(epoch FROM {row}.created_at) / {seconds})::bigint"


def _pg_latency_us(row: str) -> str:
    return f"floor({row}.latency_ms * 1000 + 0.5)::bigint"


def _grouped_select(bucket: str, latency_us: str, source: str) -> str:
    return (
        f"SELECT {bucket}, coalesce(r.key_id, 0), coalesce(r.provider_id, 0), coalesce(r.provider_name, ''), "
        "r.model, count(*), sum(r.prompt_tokens), sum(r.completion_tokens), sum(r.total_tokens), "
        f"sum(CASE WHEN r.status_code >= 400 THEN 1 ELSE 0 END), sum(r.cost_usd), sum({latency_us}) "
        f"FROM {source} AS r GROUP BY 1, 2, 3, 4, 5"
    )


def _sqlite_add(target: tuple[str, str, int], row: str) -> str:
    table, bucket, seconds = target
    updates = ", ".join(f"{c} = {c} + excluded.{c}" for c in SUMS)
    values = (
        f"{_sqlite_bucket(row, seconds)}, coalesce({row}.key_id, 0), coalesce({row}.provider_id, 0), "
        f"coalesce({row}.provider_name, ''), {row}.model, 1, {row}.prompt_tokens, {row}.completion_tokens, "
        f"{row}.total_tokens, {row}.status_code >= 400, {row}.cost_usd, {_sqlite_latency_us(row)}"
    )
    return (
        f"INSERT INTO {table} ({_columns(bucket)}) VALUES ({values}) "
        f"ON CONFLICT ({bucket}, {', '.join(DIMS)}) DO UPDATE SET {updates};"
    )


def _sqlite_remove(target: tuple[str, str, int], row: str) -> str:
    table, bucket, seconds = target
    where = (
        f"{bucket} = {_sqlite_bucket(row, seconds)} AND key_id = coalesce({row}.key_id, 0) "
        f"AND provider_id = coalesce({row}.provider_id, 0) AND provider_name = coalesce({row}.provider_name, '') "
        f"AND model = {row}.model"
    )
    return (
        f"UPDATE {table} SET requests = requests - 1, "
        f"prompt_tokens = prompt_tokens - {row}.prompt_tokens, "
        f"completion_tokens = completion_tokens - {row}.completion_tokens, "
        f"total_tokens = total_tokens - {row}.total_tokens, "
        f"errors = errors - ({row}.status_code >= 400), cost_usd = cost_usd - {row}.cost_usd, "
        f"latency_us = latency_us - {_sqlite_latency_us(row)} WHERE {where}; "
        f"DELETE FROM {table} WHERE {where} AND requests = 0;"
    )


def _pg_add(target: tuple[str, str, int], source: str) -> str:
    table, bucket, seconds = target
    updates = ", ".join(f"{c} = u.{c} + EXCLUDED.{c}" for c in SUMS)
    # Sorted, so concurrent writers lock rollup rows in the same order (no deadlocks).
    return (
        f"INSERT INTO {table} AS u ({_columns(bucket)}) "
        f"{_grouped_select(_pg_bucket('r', seconds), _pg_latency_us('r'), source)} ORDER BY 1, 2, 3, 4, 5 "
        f"ON CONFLICT ({bucket}, {', '.join(DIMS)}) DO UPDATE SET {updates};"
    )


def _pg_remove(target: tuple[str, str, int], source: str) -> str:
    table, bucket, seconds = target
    updates = ", ".join(f"{c} = u.{c} - d.{c}" for c in SUMS)
    match = " AND ".join(f"u.{c} = d.{c}" for c in (bucket, *DIMS))
    names = ", ".join((bucket, *DIMS, *SUMS))
    return (
        f"UPDATE {table} AS u SET {updates} "
        f"FROM ({_grouped_select(_pg_bucket('r', seconds), _pg_latency_us('r'), source)}) AS d ({names}) "
        f"WHERE {match}; DELETE FROM {table} WHERE requests = 0;"
    )


def _install(targets: tuple[tuple[str, str, int], ...]) -> None:
    """(Re)create the triggers so that they keep every table in `targets` up to date."""
    if op.get_bind().dialect.name == "postgresql":
        bodies = {
            "usage_rollup_on_insert": " ".join(_pg_add(t, "new_rows") for t in targets),
            "usage_rollup_on_delete": " ".join(_pg_remove(t, "old_rows") for t in targets),
            "usage_rollup_on_update": " ".join(
                _pg_remove(t, "old_rows") + " " + _pg_add(t, "new_rows") for t in targets
            ),
            "usage_rollup_on_truncate": " ".join(f"DELETE FROM {t[0]};" for t in targets),
        }
        # The triggers of 0002 call these functions by name; replacing the bodies is enough.
        for name, body in bodies.items():
            op.execute(
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {body} RETURN NULL; END $$"
            )
        return
    events = {
        "usage_rollup_on_insert": ("AFTER INSERT ON usage_record", " ".join(_sqlite_add(t, "NEW") for t in targets)),
        "usage_rollup_on_delete": ("AFTER DELETE ON usage_record", " ".join(_sqlite_remove(t, "OLD") for t in targets)),
        "usage_rollup_on_update": (
            "AFTER UPDATE ON usage_record",
            " ".join(_sqlite_remove(t, "OLD") for t in targets) + " "
            + " ".join(_sqlite_add(t, "NEW") for t in targets),
        ),
    }
    for name, (event, body) in events.items():
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute(f"CREATE TRIGGER {name} {event} FOR EACH ROW BEGIN {body} END")


def upgrade():
    op.create_table('usage_rollup_daily',
    sa.Column('day', sa.BigInteger(), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=False),
    sa.Column('provider_id', sa.Integer(), nullable=False),
    sa.Column('provider_name', sa.String(length=100), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('requests', sa.BigInteger(), nullable=False),
    sa.Column('prompt_tokens', sa.BigInteger(), nullable=False),
    sa.Column('completion_tokens', sa.BigInteger(), nullable=False),
    sa.Column('total_tokens', sa.BigInteger(), nullable=False),
    sa.Column('errors', sa.BigInteger(), nullable=False),
    sa.Column('cost_usd', sa.BigInteger(), nullable=False),
    sa.Column('latency_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'key_id', 'provider_id', 'provider_name', 'model', name=op.f('pk_usage_rollup_daily'))
    )
    with op.batch_alter_table('usage_rollup_daily', schema=None) as batch_op:
        batch_op.create_index('ix_usage_rollup_daily_key_day', ['key_id', 'day'], unique=False)

    # Hours are whole days' parts: the daily sums are the hourly ones regrouped (hours >= 0 here).
    sums = ", ".join(f"sum({c})" for c in SUMS)
    op.execute(
        f"INSERT INTO usage_rollup_daily ({_columns('day')}) "
        f"SELECT hour / 24, {', '.join(DIMS)}, {sums} FROM usage_rollup GROUP BY 1, 2, 3, 4, 5"
    )
    _install((HOURLY, DAILY))


def downgrade():
    _install((HOURLY,))
    with op.batch_alter_table('usage_rollup_daily', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_rollup_daily_key_day')

    op.drop_table('usage_rollup_daily')
