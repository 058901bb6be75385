"""provider and provider model ids are never reused on SQLite

Audit rows, usage rows and `?provider_id=` filters keep the id of a deleted
provider (or model). SQLite hands a plain INTEGER PRIMARY KEY's highest id out
again after that row is deleted, so a new provider would inherit the deleted
one's history. AUTOINCREMENT forbids the reuse, as 0004 did for api_key;
PostgreSQL sequences never reuse ids.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 12:30:00
"""
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None
DIALECTS = ("sqlite",)

# provider_model references provider ON DELETE CASCADE, and with foreign keys on (shared/db.py)
# rebuilding provider drops the old table, which deletes every model through the cascade. The
# models are kept aside and put back; their table is rebuilt after, which nothing references.
SAVED = "_provider_model_saved"


def _rebuild(autoincrement):
    op.execute(f"CREATE TEMP TABLE {SAVED} AS SELECT * FROM provider_model")
    with op.batch_alter_table("provider", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass
    op.execute("DELETE FROM provider_model")  # whatever the cascade left (nothing, with foreign keys on)
    op.execute(f"INSERT INTO provider_model SELECT * FROM {SAVED}")
    op.execute(f"DROP TABLE {SAVED}")
    with op.batch_alter_table(
        "provider_model", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade():
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(True)


def downgrade():
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(False)
