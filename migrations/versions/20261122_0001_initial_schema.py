"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 05:13:31.011507

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    
    op.create_table('api_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('key_hint', sa.String(length=32), nullable=False),
    sa.Column('provider_ids', sa.JSON(), nullable=False),
    sa.Column('models', sa.JSON(), nullable=False),
    sa.Column('rpm', sa.Integer(), nullable=True),
    sa.Column('tpm', sa.Integer(), nullable=True),
    sa.Column('max_concurrency', sa.Integer(), nullable=True),
    sa.Column('token_quota', sa.BigInteger(), nullable=True),
    sa.Column('budget_usd', sa.BigInteger(), nullable=True),
    sa.Column('quota_period', sa.String(length=16), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('archive_messages', sa.Boolean(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('last_used_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_key')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_key_key_hash'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('remote_addr', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('resource', sa.String(length=32), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=True),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_created_at'), ['created_at'], unique=False)

    op.create_table('config_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_config_version'))
    )
    op.create_table('provider',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('server_url', sa.String(length=500), nullable=False),
    sa.Column('server_key', sa.String(length=500), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('http_proxy', sa.String(length=500), nullable=True),
    sa.Column('timeout_s', sa.Float(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('weight', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider')),
    sa.UniqueConstraint('name', name=op.f('uq_provider_name'))
    )
    op.create_table('usage_record',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=True),
    sa.Column('provider_id', sa.Integer(), nullable=True),
    sa.Column('provider_name', sa.String(length=100), nullable=True),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('upstream_model', sa.String(length=200), nullable=True),
    sa.Column('conversation_id', sa.String(length=128), nullable=True),
    sa.Column('transport', sa.String(length=8), nullable=False),
    sa.Column('stream', sa.Boolean(), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('total_tokens', sa.Integer(), nullable=False),
    sa.Column('token_source', sa.String(length=16), nullable=False),
    sa.Column('cost_usd', sa.BigInteger(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('ttft_ms', sa.Float(), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('error_type', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_record')),
    sa.UniqueConstraint('request_id', name=op.f('uq_usage_record_request_id'))
    )
    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usage_record_conversation_id'), ['conversation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_usage_record_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_usage_record_key_created', ['key_id', 'created_at'], unique=False)
        batch_op.create_index('ix_usage_record_model_created', ['model', 'created_at'], unique=False)
        batch_op.create_index('ix_usage_record_provider_created', ['provider_id', 'created_at'], unique=False)

    op.create_table('provider_model',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider_id', sa.Integer(), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('upstream_name', sa.String(length=200), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('input_price', sa.BigInteger(), nullable=True),
    sa.Column('output_price', sa.BigInteger(), nullable=True),
    sa.Column('cached_input_price', sa.BigInteger(), nullable=True),
    sa.Column('context_length', sa.Integer(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['provider_id'], ['provider.id'], name=op.f('fk_provider_model_provider_id_provider'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_model')),
    sa.UniqueConstraint('provider_id', 'model_name', name=op.f('uq_provider_model_provider_id'))
    )
    with op.batch_alter_table('provider_model', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_model_provider_id'), ['provider_id'], unique=False)

    


    # The proxy polls this single row to notice admin changes.
    op.execute("INSERT INTO config_version (id, version, updated_at) VALUES (1, 0, CURRENT_TIMESTAMP)")


def downgrade():
    
    with op.batch_alter_table('provider_model', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_model_provider_id'))

    op.drop_table('provider_model')
    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_record_provider_created')
        batch_op.drop_index('ix_usage_record_model_created')
        batch_op.drop_index('ix_usage_record_key_created')
        batch_op.drop_index(batch_op.f('ix_usage_record_created_at'))
        batch_op.drop_index(batch_op.f('ix_usage_record_conversation_id'))

    op.drop_table('usage_record')
    op.drop_table('provider')
    op.drop_table('config_version')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_created_at'))

    op.drop_table('audit_log')
    op.drop_table('api_key')
    
