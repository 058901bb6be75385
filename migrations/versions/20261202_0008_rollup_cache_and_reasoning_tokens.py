"""usage rollups sum cached, cache-write and reasoning tokens

Reports show the prompt tokens read from and written to a provider's cache and
the reasoning tokens (all parts of the prompt or completion counts), so both
rollups gain those sums. They are rebuilt from `usage_record` (nothing is
lost) and the triggers replaced by ones that add the new columns too;
downgrading rebuilds them as 0006 left them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 02:50:00
"""
from migrations.rollup_triggers import rebuild_rollups

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

DIMS = ("key_id", "provider_id", "provider_name", "model", "api")
OLD_SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "cost_usd", "latency_us")
NEW_SUMS = (*OLD_SUMS, "cached_tokens", "cache_write_tokens", "reasoning_tokens")


def upgrade():
    rebuild_rollups(DIMS, NEW_SUMS)


def downgrade():
    rebuild_rollups(DIMS, OLD_SUMS)
