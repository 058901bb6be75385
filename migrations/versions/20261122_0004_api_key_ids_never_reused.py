"""api_key ids are never reused on SQLite

Usage rows keep the key_id of a deleted key. SQLite hands a plain INTEGER
PRIMARY KEY's highest id out again after that row is deleted, so a new key
would inherit the deleted key's usage, quota consumption and reports.
AUTOINCREMENT forbids the reuse; PostgreSQL sequences never reuse ids.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 07:00:00
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None
# Only SQLite reuses ids; elsewhere this revision does nothing and says nothing (shared/migrate.py).
DIALECTS = ("sqlite",)


def upgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    # Nothing references api_key by foreign key, so rebuilding it is safe.
    with op.batch_alter_table("api_key", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("api_key", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
        pass
