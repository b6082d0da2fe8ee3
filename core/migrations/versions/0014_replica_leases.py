"""Replica leases and the roles replicas hold, for taking over a dead replica's work

Revision ID: 0014_replica_leases
Revises: 0013_log_chunks
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_replica_leases'
down_revision = '0013_log_chunks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('replicas',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_replicas_expires_at'), 'replicas', ['expires_at'], unique=False)
    op.create_table('replica_roles',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('replica_roles')
    op.drop_index(op.f('ix_replicas_expires_at'), table_name='replicas')
    op.drop_table('replicas')
