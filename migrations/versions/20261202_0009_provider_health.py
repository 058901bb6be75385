"""provider health reported by the proxies

Each proxy process keeps circuit breakers and recent attempt figures per provider and
writes them here every few seconds (one row per process and provider), so the admin's
`GET /providers/{id}/health` can merge what every process and machine sees.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 03:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "provider_health",
        sa.Column("instance", sa.String(length=100), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("provider_name", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("latencies_ms", sa.JSON(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("last_error_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("instance", "provider_id", name=op.f("pk_provider_health")),
    )
    op.create_index(op.f("ix_provider_health_updated_at"), "provider_health", ["updated_at"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_provider_health_updated_at"), table_name="provider_health")
    op.drop_table("provider_health")
