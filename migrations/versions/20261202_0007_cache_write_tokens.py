"""cache writes: their tokens on usage rows, their price on provider models

Anthropic bills prompt tokens written to its cache apart from those read from it (and
from the rest of the prompt): usage rows get `cache_write_tokens` (part of prompt_tokens,
like `cached_tokens`), provider models a `cache_write_price` per 1M tokens (NULL: the
input price).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("usage_record", sa.Column("cache_write_tokens", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("provider_model", sa.Column("cache_write_price", sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table("provider_model") as batch:
        batch.drop_column("cache_write_price")
    # A plain DROP COLUMN (SQLite >= 3.35): a batch copy of usage_record would drop its rollup triggers.
    op.drop_column("usage_record", "cache_write_tokens")
