"""usage rollup and latency indexes

Adds `usage_rollup` (usage summed per UTC hour, key, provider and model), the
triggers that keep it equal to `usage_record` on both backends, a backfill of
existing rows, and three latency-ordered covering indexes for exact p95s.

Generated with `alembic revision --autogenerate`, then edited by hand: the
money column is a plain BigInteger (no custom types in migrations) and the
trigger SQL is written per dialect. The expressions must stay identical on
SQLite and PostgreSQL:

- hour: whole hours since 1970-01-01 of the naive-UTC `created_at`, fractions
  of a second dropped (SQLite's strftime rounds them to milliseconds, hence
  the substr to 19 characters);
- latency_us: floor(latency_ms * 1000 + 0.5) in double precision, the same
  IEEE operations on both;
- ids that are NULL become 0 and a NULL provider name '' so the key has no NULLs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:47:51.266926

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

COLUMNS = (
    "hour, key_id, provider_id, provider_name, model, requests, prompt_tokens, "
    "completion_tokens, total_tokens, errors, cost_usd, latency_us"
)
KEY = "hour, key_id, provider_id, provider_name, model"
SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "cost_usd", "latency_us")


def _sqlite_hour(row: str) -> str:
    return f"CAST(strftime('%s', substr({row}.created_at, 1, 19)) AS INTEGER) / 3600"


def _sqlite_latency_us(row: str) -> str:
    return f"CAST({row}.latency_ms * 1000 + 0.5 AS INTEGER)"


def _pg_hour(row: str) -> str:
    return f"floor(extract(epoch FROM {row}.created_at) / 3600)::bigint"


def _pg_latency_us(row: str) -> str:
    return f"floor({row}.latency_ms * 1000 + 0.5)::bigint"


def _grouped_select(hour: str, latency_us: str, source: str) -> str:
    """One summed row per rollup key of the rows in `source` (aliased r)."""
    return (
        f"SELECT {hour} AS hour, coalesce(r.key_id, 0) AS key_id, coalesce(r.provider_id, 0) AS provider_id, "
        "coalesce(r.provider_name, '') AS provider_name, r.model AS model, count(*) AS requests, "
        "sum(r.prompt_tokens) AS prompt_tokens, sum(r.completion_tokens) AS completion_tokens, "
        "sum(r.total_tokens) AS total_tokens, "
        "sum(CASE WHEN r.status_code >= 400 THEN 1 ELSE 0 END) AS errors, "
        f"sum(r.cost_usd) AS cost_usd, sum({latency_us}) AS latency_us "
        f"FROM {source} AS r GROUP BY 1, 2, 3, 4, 5"
    )


def _sqlite_row_values(row: str) -> str:
    return (
        f"{_sqlite_hour(row)}, coalesce({row}.key_id, 0), coalesce({row}.provider_id, 0), "
        f"coalesce({row}.provider_name, ''), {row}.model, 1, {row}.prompt_tokens, {row}.completion_tokens, "
        f"{row}.total_tokens, {row}.status_code >= 400, {row}.cost_usd, {_sqlite_latency_us(row)}"
    )


def _sqlite_add(row: str) -> str:
    updates = ", ".join(f"{c} = {c} + excluded.{c}" for c in SUMS)
    return (
        f"INSERT INTO usage_rollup ({COLUMNS}) VALUES ({_sqlite_row_values(row)}) "
        f"ON CONFLICT ({KEY}) DO UPDATE SET {updates};"
    )


def _sqlite_remove(row: str) -> str:
    where = (
        f"hour = {_sqlite_hour(row)} AND key_id = coalesce({row}.key_id, 0) "
        f"AND provider_id = coalesce({row}.provider_id, 0) AND provider_name = coalesce({row}.provider_name, '') "
        f"AND model = {row}.model"
    )
    return (
        "UPDATE usage_rollup SET requests = requests - 1, "
        f"prompt_tokens = prompt_tokens - {row}.prompt_tokens, "
        f"completion_tokens = completion_tokens - {row}.completion_tokens, "
        f"total_tokens = total_tokens - {row}.total_tokens, "
        f"errors = errors - ({row}.status_code >= 400), cost_usd = cost_usd - {row}.cost_usd, "
        f"latency_us = latency_us - {_sqlite_latency_us(row)} WHERE {where}; "
        f"DELETE FROM usage_rollup WHERE {where} AND requests = 0;"
    )


def _pg_add(source: str) -> str:
    updates = ", ".join(f"{c} = u.{c} + EXCLUDED.{c}" for c in SUMS)
    # Sorted, so concurrent writers lock rollup rows in the same order (no deadlocks).
    return (
        f"INSERT INTO usage_rollup AS u ({COLUMNS}) "
        f"{_grouped_select(_pg_hour('r'), _pg_latency_us('r'), source)} ORDER BY 1, 2, 3, 4, 5 "
        f"ON CONFLICT ({KEY}) DO UPDATE SET {updates};"
    )


def _pg_remove(source: str) -> str:
    updates = ", ".join(f"{c} = u.{c} - d.{c}" for c in SUMS)
    match = " AND ".join(f"u.{c} = d.{c}" for c in KEY.split(", "))
    return (
        f"UPDATE usage_rollup AS u SET {updates} "
        f"FROM ({_grouped_select(_pg_hour('r'), _pg_latency_us('r'), source)}) AS d WHERE {match}; "
        "DELETE FROM usage_rollup WHERE requests = 0;"
    )


PG_FUNCTIONS = {
    "usage_rollup_on_insert": _pg_add("new_rows"),
    "usage_rollup_on_delete": _pg_remove("old_rows"),
    "usage_rollup_on_update": _pg_remove("old_rows") + " " + _pg_add("new_rows"),
    "usage_rollup_on_truncate": "DELETE FROM usage_rollup;",
}
PG_TRIGGERS = {
    "usage_rollup_on_insert": "AFTER INSERT ON usage_record REFERENCING NEW TABLE AS new_rows",
    "usage_rollup_on_delete": "AFTER DELETE ON usage_record REFERENCING OLD TABLE AS old_rows",
    "usage_rollup_on_update": (
        "AFTER UPDATE ON usage_record REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    ),
    "usage_rollup_on_truncate": "AFTER TRUNCATE ON usage_record",
}
SQLITE_TRIGGERS = {
    "usage_rollup_on_insert": ("AFTER INSERT ON usage_record", _sqlite_add("NEW")),
    "usage_rollup_on_delete": ("AFTER DELETE ON usage_record", _sqlite_remove("OLD")),
    "usage_rollup_on_update": ("AFTER UPDATE ON usage_record", _sqlite_remove("OLD") + " " + _sqlite_add("NEW")),
}


def upgrade():
    op.create_table('usage_rollup',
    sa.Column('hour', sa.BigInteger(), nullable=False),
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
    sa.PrimaryKeyConstraint('hour', 'key_id', 'provider_id', 'provider_name', 'model', name=op.f('pk_usage_rollup'))
    )
    with op.batch_alter_table('usage_rollup', schema=None) as batch_op:
        batch_op.create_index('ix_usage_rollup_key_hour', ['key_id', 'hour'], unique=False)

    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        batch_op.create_index('ix_usage_record_key_latency', ['key_id', 'latency_ms', 'created_at', 'provider_id', 'model'], unique=False)
        batch_op.create_index('ix_usage_record_latency', ['latency_ms', 'created_at', 'key_id', 'provider_id', 'provider_name', 'model'], unique=False)
        batch_op.create_index('ix_usage_record_model_latency', ['model', 'latency_ms', 'created_at', 'key_id', 'provider_id'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"INSERT INTO usage_rollup ({COLUMNS}) "
            + _grouped_select(_pg_hour("r"), _pg_latency_us("r"), "usage_record")
        )
        for name, body in PG_FUNCTIONS.items():
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
            )
            op.execute(f"CREATE TRIGGER {name} {PG_TRIGGERS[name]} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    else:
        op.execute(
            f"INSERT INTO usage_rollup ({COLUMNS}) "
            + _grouped_select(_sqlite_hour("r"), _sqlite_latency_us("r"), "usage_record")
        )
        for name, (event, body) in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {event} FOR EACH ROW BEGIN {body} END")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for name in PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON usage_record")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")

    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_record_model_latency')
        batch_op.drop_index('ix_usage_record_latency')
        batch_op.drop_index('ix_usage_record_key_latency')

    with op.batch_alter_table('usage_rollup', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_rollup_key_hour')

    op.drop_table('usage_rollup')
