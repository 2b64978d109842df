"""Issue 14: per-tenant running quota at the claim and round-robin order between tenants,
decided from the database (SQLite and PostgreSQL)."""

from datetime import timedelta

from sqlalchemy import update

from app.core.jobs.claim import claim_job, claimable_job_ids
from app.core.jobs.fair_share import DEFERRED, fair_order
from app.core.persistence.models import Job, utcnow
from tests.conftest import make_tenant
from tests.support.rows import event_types, load_job, make_job
from worker.context import worker_context
from worker.runner import run_job


def _claim(settings, job_id, max_running, worker="w1"):
    with worker_context(settings).sessions() as session:
        return claim_job(session, job_id, worker, settings.stale_seconds, max_running)


def _fair(settings, max_running=1):
    with worker_context(settings).sessions() as session:
        return fair_order(session, claimable_job_ids(session, settings.stale_seconds), max_running)


def test_a_tenant_at_its_running_quota_cannot_claim_another_job(settings, tenant_id, session_factory):
    other = make_tenant(session_factory).id
    running = make_job(settings, tenant_id, status="running", heartbeat_at=utcnow(), attempts=1)
    waiting = make_job(settings, tenant_id)
    theirs = make_job(settings, other)
    assert _claim(settings, waiting, max_running=1) is None
    assert load_job(settings, waiting).status == "queued"  # deferred, not failed
    quota = settings.model_copy(update={"tenant_max_running_jobs": 1})
    assert run_job(waiting, quota) == DEFERRED
    assert _claim(settings, theirs, max_running=1) is not None
    assert _claim(settings, waiting, max_running=2) is not None  # a higher quota lets it run
    # A stale running job may be taken over although its tenant is at quota: it counts itself.
    stale = utcnow() - timedelta(seconds=settings.stale_seconds + 5)
    with worker_context(settings).sessions() as session:
        session.execute(update(Job).where(Job.id == running).values(heartbeat_at=stale))
        session.commit()
    assert _claim(settings, running, max_running=2, worker="w2") is not None


def test_queued_jobs_are_ordered_round_robin_by_tenant(settings, tenant_id, session_factory):
    busy, quiet, idle = tenant_id, make_tenant(session_factory).id, make_tenant(session_factory).id
    backlog = [make_job(settings, busy, age_seconds=100 - i) for i in range(3)]
    newcomer = make_job(settings, quiet, age_seconds=1)
    assert _fair(settings) == [backlog[0], newcomer, backlog[1], backlog[2]]
    # `busy` was served last: `quiet` goes first now.
    make_job(settings, busy, status="succeeded", started_at=utcnow())
    assert _fair(settings) == [newcomer, backlog[0], backlog[1], backlog[2]]
    # A tenant at its running quota comes last in each round (and its claim waits).
    make_job(settings, quiet, status="running", heartbeat_at=utcnow(), started_at=utcnow() - timedelta(hours=1))
    late = make_job(settings, idle)
    assert _fair(settings) == [late, backlog[0], newcomer, backlog[1], backlog[2]]


def test_each_tenant_is_offered_even_behind_a_long_backlog(settings, tenant_id, session_factory):
    other = make_tenant(session_factory).id
    for i in range(105):
        make_job(settings, tenant_id, age_seconds=1000 - i)
    theirs = make_job(settings, other)
    with worker_context(settings).sessions() as session:
        assert theirs not in claimable_job_ids(session, settings.stale_seconds)  # the oldest 100 only
    assert _fair(settings)[1] == theirs


def test_the_embedded_worker_serves_tenants_in_turn(settings, tenant_id, session_factory, monkeypatch):
    """A backlog submitted first does not hold back another tenant's job behind all of it."""
    import threading

    from worker import embedded

    ran = []

    def fake_run_job(job_id, settings, shutdown):  # the job "runs": it starts and succeeds at once
        ran.append(job_id)
        with worker_context(settings).sessions() as session:
            session.execute(update(Job).where(Job.id == job_id).values(status="succeeded", started_at=utcnow()))
            session.commit()
        return "succeeded"

    monkeypatch.setattr("worker.runner.run_job", fake_run_job)
    other = make_tenant(session_factory).id
    backlog = [make_job(settings, tenant_id, age_seconds=100 - i) for i in range(3)]
    newcomer = make_job(settings, other, age_seconds=1)
    while embedded.run_pending(settings, threading.Event()):
        pass
    assert ran == [backlog[0], newcomer, backlog[1], backlog[2]]


def test_a_running_limit_of_one_holds_against_simultaneous_claims(settings, tenant_id):
    """Issue 28.6: claims of one tenant's jobs in the same instant each counted the other's
    job as not yet running; now they are serialised per tenant."""
    import threading

    for _ in range(3):
        jobs = [make_job(settings, tenant_id) for _ in range(4)]
        barrier = threading.Barrier(len(jobs))
        claims = []

        def contend(job_id, name, barrier, claims):
            barrier.wait()
            claims.append(_claim(settings, job_id, max_running=1, worker=name))

        threads = [threading.Thread(target=contend, args=(job, f"w{i}", barrier, claims))
                   for i, job in enumerate(jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len([c for c in claims if c is not None]) == 1
        with worker_context(settings).sessions() as session:
            session.execute(update(Job).where(Job.id.in_(jobs)).values(status="succeeded"))
            session.commit()


def _dead_pid() -> int:
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_job_whose_worker_is_known_gone_frees_its_tenant_slot_at_once(settings, tenant_id):
    """Issue 28.1: a job of a SIGKILLed worker on this host, or one this process dropped in a
    database outage, no longer waits out the stale period holding its tenant's slot."""
    from worker.lost_jobs import expire_lost_jobs, worker_id

    host = worker_id().rsplit(":", 1)[0]
    killed = make_job(settings, tenant_id, status="running", heartbeat_at=utcnow(), attempts=1,
                      worker_id=f"{host}:{_dead_pid()}")
    dropped = make_job(settings, tenant_id, status="running", heartbeat_at=utcnow(), attempts=1,
                       worker_id=worker_id())
    alive = make_job(settings, tenant_id, status="running", heartbeat_at=utcnow(), attempts=1,
                     worker_id=f"{host}:1")  # pid 1 exists
    waiting = make_job(settings, tenant_id)
    assert _claim(settings, waiting, max_running=2) is None  # two live jobs hold both slots
    with worker_context(settings).sessions() as session:
        assert sorted(expire_lost_jobs(session, settings)) == sorted([killed, dropped])
    assert _claim(settings, waiting, max_running=2) is not None
    assert "lost" in event_types(settings, killed) and "lost" not in event_types(settings, alive)
    assert _claim(settings, killed, max_running=3, worker="w2") is not None  # claimable at once
