"""provider api_version: Azure's api-version query, Gemini's URL version

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 14:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("provider", sa.Column("api_version", sa.String(length=40), nullable=True))


def downgrade():
    # Not a batch rebuild: on SQLite that drops provider, and the cascade its models (see 0010).
    op.execute("ALTER TABLE provider DROP COLUMN api_version")
