"""Fair sharing of workers between tenants, decided from the database alone.

Two rules: a tenant never has more than TRAJX_TENANT_MAX_RUNNING_JOBS jobs running
(the claim's UPDATE refuses one more, so the job just stays queued; a job whose heartbeat
went stale is known lost and holds no slot), and when
several tenants have work waiting, the worker that picks the next job goes round
the tenants, the one served least recently first, instead of draining one
tenant's backlog before anyone else's job starts. No torch here.
"""

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, aliased

from app.core.persistence.models import Job, Tenant

RUNNING = ("running", "cancelling")
# A job the claim turned down because its tenant has its running quota: still queued.
DEFERRED = "deferred"


def tenant_has_room(max_running: int, stale_before: datetime) -> ColumnElement[bool]:
    """SQL condition on a `jobs` row: its tenant runs fewer than `max_running` other jobs
    whose heartbeat is newer than `stale_before` (a stale one is lost: recovery re-runs it)."""
    other = aliased(Job)
    running = (select(func.count()).where(other.tenant_id == Job.tenant_id, other.status.in_(RUNNING),
                                          other.heartbeat_at >= stale_before, other.id != Job.id)
               .scalar_subquery())
    return running < max_running


def lock_tenant(session: Session, job_id: str) -> None:
    """Serialise claims of one tenant's jobs until the caller commits (PostgreSQL: a row lock
    on the tenant; SQLite writes are serial anyway). Without it two claims in one instant
    each count the other's job as not yet running and both pass the quota."""
    tenant = select(Job.tenant_id).where(Job.id == job_id).scalar_subquery()
    session.execute(select(Tenant.id).where(Tenant.id == tenant).with_for_update())


def fair_order(session: Session, claimable: list[str], max_running: int) -> list[str]:
    """`claimable` job ids (oldest first) plus each tenant's oldest queued job, reordered
    round-robin by tenant: tenants below their running quota first, then the tenant whose
    last job started longest ago. Jobs of one tenant keep their order."""
    oldest_per_tenant = session.scalars(
        select(func.min(Job.id)).where(Job.status == "queued").group_by(Job.tenant_id)).all()
    ids = list(dict.fromkeys([*claimable, *oldest_per_tenant]))  # ids are time-ordered
    rows = session.execute(select(Job.id, Job.tenant_id, Job.created_at).where(Job.id.in_(ids))).all()
    tenant_of = {job_id: tenant for job_id, tenant, _ in rows}
    # Creation order: ids alone tie-break randomly within one millisecond.
    created = {job_id: (as_aware(created_at), job_id) for job_id, _, created_at in rows}
    tenants = set(tenant_of.values())
    running = dict(session.execute(select(Job.tenant_id, func.count()).where(
        Job.tenant_id.in_(tenants), Job.status.in_(RUNNING)).group_by(Job.tenant_id)).all())
    last_start = dict(session.execute(select(Job.tenant_id, func.max(Job.started_at)).where(
        Job.tenant_id.in_(tenants)).group_by(Job.tenant_id)).all())
    session.rollback()
    queues: dict[str, list[str]] = {}
    for job_id in sorted(tenant_of, key=created.__getitem__):
        queues.setdefault(tenant_of[job_id], []).append(job_id)
    never = datetime.min.replace(tzinfo=UTC)
    turn = sorted(queues, key=lambda t: (running.get(t, 0) >= max_running, as_aware(last_start.get(t)) or never))
    order = []
    for round_ in range(max(map(len, queues.values()), default=0)):
        order += [queues[t][round_] for t in turn if round_ < len(queues[t])]
    return order


def as_aware(value: datetime | None) -> datetime | None:
    # SQLite hands aggregates back without the column type's timezone.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
