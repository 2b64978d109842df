"""The claim state machine against real SQLite and PostgreSQL."""

import threading
from datetime import timedelta

from sqlalchemy import update

from app.core.jobs.claim import (
    Claim,
    cancel_requested,
    claim_job,
    claimable_job_ids,
    fail_exhausted,
    finish,
    heartbeat,
    release,
)
from app.core.persistence.models import Job, utcnow
from tests.support.rows import event_types, load_job, make_job
from worker.context import worker_context


def _claim(settings, job_id, worker="w1"):
    with worker_context(settings).sessions() as session:
        return claim_job(session, job_id, worker, settings.stale_seconds)


def test_claim_takes_a_queued_job_once(settings, tenant_id):
    job_id = make_job(settings, tenant_id)
    claim = _claim(settings, job_id)
    assert claim == Claim(job_id, "w1", 1)
    assert _claim(settings, job_id, "w2") is None
    job = load_job(settings, job_id)
    assert (job.status, job.attempts, job.worker_id) == ("running", 1, "w1")
    assert job.heartbeat_at is not None and job.started_at is not None
    # one event for the one transition; the refused claim leaves its trace
    assert event_types(settings, job_id) == ["started", "claim_refused"]


def test_concurrent_claims_have_one_winner(settings, tenant_id):
    job_id = make_job(settings, tenant_id)
    barrier = threading.Barrier(6)
    results = []

    def contend(name):
        barrier.wait()
        results.append(_claim(settings, job_id, name))

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert load_job(settings, job_id).attempts == 1


def test_stale_job_is_reclaimed_and_the_old_claim_is_fenced_off(settings, tenant_id):
    stale = utcnow() - timedelta(seconds=settings.stale_seconds + 5)
    job_id = make_job(settings, tenant_id, status="running", attempts=1, worker_id="dead",
                      heartbeat_at=stale)
    old = Claim(job_id, "dead", 1)
    new = _claim(settings, job_id, "w2")
    assert new == Claim(job_id, "w2", 2)
    with worker_context(settings).sessions() as session:
        assert heartbeat(session, old) is False
        assert cancel_requested(session, old) is True  # a lost claim means: stop
        assert finish(session, old, "succeeded") is None
        session.rollback()
        assert heartbeat(session, new, progress_step=3, progress_total=10) is True
    assert load_job(settings, job_id).progress_step == 3


def test_fresh_running_job_is_not_claimable(settings, tenant_id):
    job_id = make_job(settings, tenant_id, status="running", attempts=1, worker_id="alive",
                      heartbeat_at=utcnow())
    assert _claim(settings, job_id) is None
    assert load_job(settings, job_id).status == "running"


def test_exhausted_stale_job_fails_with_worker_lost(settings, tenant_id):
    stale = utcnow() - timedelta(seconds=settings.stale_seconds + 5)
    job_id = make_job(settings, tenant_id, status="running", attempts=settings.max_attempts,
                      worker_id="dead", heartbeat_at=stale)
    assert _claim(settings, job_id) is None
    job = load_job(settings, job_id)
    assert (job.status, job.error_code) == ("failed", "worker_lost")
    assert job.finished_at is not None
    assert event_types(settings, job_id) == ["failed", "claim_refused"]


def test_sweep_ends_stale_cancelling_jobs(settings, tenant_id):
    stale = utcnow() - timedelta(seconds=settings.stale_seconds + 5)
    job_id = make_job(settings, tenant_id, status="cancelling", attempts=1, worker_id="dead",
                      heartbeat_at=stale, cancel_requested=True)
    with worker_context(settings).sessions() as session:
        assert fail_exhausted(session, settings.stale_seconds) == []
    assert load_job(settings, job_id).status == "cancelled"


def test_finish_honours_a_cancel_requested_while_running(settings, tenant_id):
    job_id = make_job(settings, tenant_id)
    claim = _claim(settings, job_id)
    with worker_context(settings).sessions() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="cancelling", cancel_requested=True))
        session.commit()
        assert cancel_requested(session, claim) is True
        assert finish(session, claim, "succeeded", result={"x": 1}) == "cancelled"
        session.commit()
    job = load_job(settings, job_id)
    assert (job.status, job.result) == ("cancelled", None)


def test_claimable_ids_lists_queued_and_stale_oldest_first(settings, tenant_id):
    stale = utcnow() - timedelta(seconds=settings.stale_seconds + 5)
    old_queued = make_job(settings, tenant_id, age_seconds=30)
    new_queued = make_job(settings, tenant_id)
    stale_running = make_job(settings, tenant_id, age_seconds=60, status="running", attempts=1,
                             heartbeat_at=stale)
    make_job(settings, tenant_id, status="running", attempts=1, heartbeat_at=utcnow())
    make_job(settings, tenant_id, status="succeeded")
    with worker_context(settings).sessions() as session:
        assert claimable_job_ids(session, settings.stale_seconds) == [stale_running, old_queued, new_queued]
        grace = utcnow() - timedelta(seconds=10)
        assert claimable_job_ids(session, settings.stale_seconds, queued_before=grace) == [
            stale_running, old_queued]


def test_release_requeues_without_counting_the_attempt(settings, tenant_id):
    job_id = make_job(settings, tenant_id)
    claim = _claim(settings, job_id)
    with worker_context(settings).sessions() as session:
        assert release(session, claim) is True
        assert release(session, claim) is False  # the claim ended with the release
    job = load_job(settings, job_id)
    assert (job.status, job.attempts, job.worker_id) == ("queued", 0, None)
    assert _claim(settings, job_id, "w2") == Claim(job_id, "w2", 1)
