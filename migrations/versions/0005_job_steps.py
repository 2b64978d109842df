"""job_steps: what a job recorded after each completed step, for resuming; job list indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 22:45:00

A re-claimed job continues after its last recorded step instead of starting over
(issue 25). Rows live while the job does; the worker deletes them when it ends.
The job list (a tenant's jobs newest first, of one status or all) gets indexes that serve
its keyset pages (issue 28); job events an index by type, for the fault counts on /metrics.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'job_steps',
        sa.Column('job_id', sa.String(length=40), nullable=False),
        sa.Column('step', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('state', sa.LargeBinary(), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_steps_job_id_jobs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', 'step', name=op.f('pk_job_steps')),
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_tenant_id_id'), ['tenant_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_tenant_id_status_id'), ['tenant_id', 'status', 'id'], unique=False)
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_events_type_id'), ['type', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_events_type_id'))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_tenant_id_status_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_tenant_id_id'))
    op.drop_table('job_steps')
