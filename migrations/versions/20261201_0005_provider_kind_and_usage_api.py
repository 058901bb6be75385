"""provider kind, apis and connect timeout; usage api, cached and reasoning tokens

Providers get a `kind` (their wire format: `openai` for every existing row), the
client APIs they serve natively (`apis`, NULL: the kind's defaults) and a connect
timeout told apart from the first-byte `timeout_s`. Usage rows say which client API
was spoken and carry the cached-prompt and reasoning token counts upstreams report.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("provider", sa.Column("kind", sa.String(16), nullable=False, server_default="openai"))
    op.add_column("provider", sa.Column("apis", sa.JSON(), nullable=True))
    op.add_column("provider", sa.Column("connect_timeout_s", sa.Float(), nullable=False, server_default="5"))
    op.add_column("usage_record", sa.Column("api", sa.String(16), nullable=False, server_default="chat"))
    op.add_column("usage_record", sa.Column("cached_tokens", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("usage_record", sa.Column("reasoning_tokens", sa.Integer(), nullable=False, server_default="0"))
    # Rows from before this revision: a WebSocket request is the `ws` API.
    op.execute("UPDATE usage_record SET api = 'ws' WHERE transport = 'ws'")


def downgrade():
    with op.batch_alter_table("usage_record") as batch:
        batch.drop_column("reasoning_tokens")
        batch.drop_column("cached_tokens")
        batch.drop_column("api")
    with op.batch_alter_table("provider") as batch:
        batch.drop_column("connect_timeout_s")
        batch.drop_column("apis")
        batch.drop_column("kind")
