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
from alembic import op

from migrations.rollup_triggers import rebuild_rollups

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "cost_usd", "latency_us")
OLD_DIMS = ("key_id", "provider_id", "provider_name", "model")
NEW_DIMS = (*OLD_DIMS, "api")


def upgrade():
    rebuild_rollups(NEW_DIMS, SUMS)
    op.create_index("ix_usage_record_api_latency", "usage_record",
                    ["api", "latency_ms", "created_at", "key_id", "provider_id", "model"], unique=False)


def downgrade():
    op.drop_index("ix_usage_record_api_latency", table_name="usage_record")
    rebuild_rollups(OLD_DIMS, SUMS)
