"""job queue column; results stored as the executor's manifest

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 13:00:00

`jobs.queue` is chosen when a job is created (from its spec); existing jobs get the queue
their spec implied (`cpu` when it pins the CPU). A finished job's `result` of the old
shape `{targets: [{role: artifact}], report}` becomes `{files: [...]}`, the manifest the
worker now stores, with each file's sha256 and size taken from its artifact.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('spec', sa.JSON), sa.column('queue', sa.String),
                sa.column('result', sa.JSON))
artifacts = sa.table('artifacts', sa.column('id', sa.String), sa.column('sha256', sa.String),
                     sa.column('size', sa.BigInteger))


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue', sa.String(length=16), server_default='gpu', nullable=False))
    connection = op.get_bind()
    for row in connection.execute(sa.select(jobs.c.id, jobs.c.spec, jobs.c.result)).all():
        values = {}
        if ((row.spec or {}).get('params') or {}).get('device') == 'cpu':
            values['queue'] = 'cpu'
        if row.result and 'files' not in row.result:
            values['result'] = {'files': _manifest_files(connection, row.result)}
        if values:
            connection.execute(sa.update(jobs).where(jobs.c.id == row.id).values(**values))


def _manifest_files(connection, result: dict) -> list[dict]:
    """The old shape's artifacts as manifest entries (paths as the old runner wrote them)."""
    entries = [(role, index, f'target-{index}/{role}.safetensors', artifact_id)
               for index, target in enumerate(result.get('targets') or [])
               for role, artifact_id in (target or {}).items() if artifact_id]
    if result.get('report'):
        entries.append(('report', None, 'report.json', result['report']))
    stored = {row.id: row for row in connection.execute(
        sa.select(artifacts.c.id, artifacts.c.sha256, artifacts.c.size)
        .where(artifacts.c.id.in_([entry[3] for entry in entries])))}
    return [{'role': role, 'target': index, 'path': path, 'sha256': stored[artifact_id].sha256,
             'size': stored[artifact_id].size, 'metadata': {}, 'artifact': artifact_id}
            for role, index, path, artifact_id in entries if artifact_id in stored]


def downgrade() -> None:
    connection = op.get_bind()
    for row in connection.execute(sa.select(jobs.c.id, jobs.c.result)).all():
        if row.result and 'files' in row.result:
            targets: list[dict] = []
            report = None
            for file in row.result['files']:
                if file['target'] is None:
                    report = file['artifact'] if file['role'] == 'report' else report
                    continue
                targets.extend({} for _ in range(file['target'] + 1 - len(targets)))
                targets[file['target']][file['role']] = file['artifact']
            connection.execute(sa.update(jobs).where(jobs.c.id == row.id)
                               .values(result={'targets': targets, 'report': report}))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('queue')
