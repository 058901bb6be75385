"""provider secrets at rest: hints beside them, sealed with SECRET_KEY when set

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 17:00:00
"""
import sqlalchemy as sa
from alembic import op

from shared.secret_box import SecretBox, reseal_provider_secrets
from shared.secrets import key_hint, mask_url_password
from shared.settings import Settings

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

provider = sa.table(
    "provider", sa.column("id"), sa.column("server_key"), sa.column("server_key_hint"),
    sa.column("http_proxy"), sa.column("http_proxy_display"),
)


def _box() -> SecretBox:
    return Settings.from_env().secret_box()


def upgrade():
    # Not batch operations: on SQLite a rebuild of provider would cascade-delete its models (see 0010).
    op.add_column("provider", sa.Column("server_key_hint", sa.String(length=20), nullable=False, server_default=""))
    op.add_column("provider", sa.Column("http_proxy_display", sa.String(length=500), nullable=True))
    connection = op.get_bind()
    # A sealed value is longer than the secret: the 500-character limit stays on the input.
    if connection.dialect.name == "postgresql":
        op.alter_column("provider", "server_key", type_=sa.Text())
        op.alter_column("provider", "http_proxy", type_=sa.Text())
    else:
        _retype_sqlite("server_key", "TEXT NOT NULL DEFAULT ''")
        _retype_sqlite("http_proxy", "TEXT")
    # Everything stored before this revision is in clear.
    for row in connection.execute(sa.select(provider.c.id, provider.c.server_key, provider.c.http_proxy)).all():
        connection.execute(
            sa.update(provider).where(provider.c.id == row.id).values(
                server_key_hint=key_hint(row.server_key or ""),
                http_proxy_display=mask_url_password(row.http_proxy),
            )
        )
    reseal_provider_secrets(connection, _box())


def _retype_sqlite(column, declaration):
    """Give a SQLite column a new type without rebuilding the table: add, copy, drop, rename."""
    op.execute(f"ALTER TABLE provider ADD COLUMN {column}_retyped {declaration}")
    op.execute(f"UPDATE provider SET {column}_retyped = {column}")
    op.execute(f"ALTER TABLE provider DROP COLUMN {column}")
    op.execute(f"ALTER TABLE provider RENAME COLUMN {column}_retyped TO {column}")


def downgrade():
    connection = op.get_bind()
    settings = Settings.from_env()
    # Back to clear text: every key that may have sealed a row opens, none seals.
    reseal_provider_secrets(
        connection, SecretBox(None, [k for k in (settings.secret_key, *settings.secret_key_fallbacks) if k])
    )
    op.execute("ALTER TABLE provider DROP COLUMN http_proxy_display")
    op.execute("ALTER TABLE provider DROP COLUMN server_key_hint")
    if connection.dialect.name == "postgresql":
        op.alter_column("provider", "server_key", type_=sa.String(length=500))
        op.alter_column("provider", "http_proxy", type_=sa.String(length=500))
    else:
        _retype_sqlite("server_key", "VARCHAR(500) NOT NULL DEFAULT ''")
        _retype_sqlite("http_proxy", "VARCHAR(500)")
