"""Webhooks: signing, the durable outbox and its delivery, against the real database and a
real local HTTP receiver."""

import base64
import secrets
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook

from app.core.jobs.claim import fail_exhausted
from app.core.jobs.lifecycle import cancel_job
from app.core.jobs.outbox import enqueue
from app.core.persistence.models import JobEvent, WebhookDelivery, utcnow
from tests.support.receiver import WebhookReceiver
from tests.support.rows import make_job
from worker.context import worker_context
from worker.webhooks import Deliverer, RetryPolicy, deliver_due, signed_request

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
FAST = RetryPolicy(attempts=3, first_delay=0.05, timeout=2.0, allow_private=True)  # receivers are local


@pytest.fixture
def sessions(settings):
    return worker_context(settings).sessions


@pytest.fixture
def receiver():
    with WebhookReceiver(SECRET) as receiver:
        yield receiver


def _webhook_job(settings, tenant_id, url, events=None, **columns) -> str:
    return make_job(settings, tenant_id, webhook_url=url, webhook_secret=SECRET, webhook_events=events, **columns)


def _enqueue(sessions, job_id, *events):
    with sessions() as session:
        added = [enqueue(session, job_id, event, {"id": job_id, "n": n}) for n, event in enumerate(events)]
        session.commit()
    return added


def _drain(sessions, policy=FAST, timeout=10.0) -> None:
    """Deliver until no message is waiting (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliver_due(sessions, policy)
        with sessions() as session:
            if session.scalar(select(WebhookDelivery.id)) is None:
                return
        time.sleep(0.02)
    raise AssertionError("webhook messages still waiting")


def _attempts(sessions, job_id) -> list[dict]:
    with sessions() as session:
        return [e.data for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id,
                                                                       JobEvent.type == "webhook")
                                                .order_by(JobEvent.id))]


def test_signed_request_verifies_with_the_reference_library():
    headers, body = signed_request(SECRET, "job.succeeded", {"id": "job_1", "status": "succeeded"})
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"] == {"id": "job_1", "status": "succeeded"}
    assert headers["webhook-id"].startswith("msg_")


def test_only_wanted_events_are_delivered_in_order_signed_and_recorded(settings, tenant_id, sessions, receiver):
    job_id = _webhook_job(settings, tenant_id, receiver.url, ["job.running", "job.succeeded"])
    assert _enqueue(sessions, job_id, "job.running", "job.progress", "job.succeeded") == [True, False, True]
    _drain(sessions)
    assert [p["type"] for _, p, _ in receiver.received] == ["job.running", "job.succeeded"]
    assert all(verified for _, _, verified in receiver.received)
    assert [(a["event"], a["attempt"], a["ok"], a["status_code"]) for a in _attempts(sessions, job_id)] == [
        ("job.running", 1, True, 200), ("job.succeeded", 1, True, 200)]


def test_a_failed_delivery_is_retried_with_the_same_id_and_holds_back_the_next(settings, tenant_id, sessions):
    with WebhookReceiver(SECRET, statuses=[500, 503]) as receiver:
        job_id = _webhook_job(settings, tenant_id, receiver.url, ["job.running", "job.failed"])
        _enqueue(sessions, job_id, "job.running", "job.failed")
        _drain(sessions)
    assert [a["status_code"] for a in _attempts(sessions, job_id)] == [500, 503, 200, 200]
    assert [p["type"] for _, p, _ in receiver.received] == ["job.running"] * 3 + ["job.failed"]
    assert len({h["webhook-id"] for h, _, _ in receiver.received[:3]}) == 1


def test_a_dead_receiver_costs_bounded_attempts(settings, tenant_id, sessions):
    job_id = _webhook_job(settings, tenant_id, "http://127.0.0.1:9/unreachable")
    _enqueue(sessions, job_id, "job.succeeded")
    _drain(sessions)
    attempts = _attempts(sessions, job_id)
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert not any(a["ok"] for a in attempts) and all("error" in a for a in attempts)


def test_finished_messages_leave_the_outbox(settings, tenant_id, sessions, receiver):
    delivered = _webhook_job(settings, tenant_id, receiver.url)
    given_up = _webhook_job(settings, tenant_id, "http://127.0.0.1:9/unreachable")
    waiting = _webhook_job(settings, tenant_id, receiver.url)
    _enqueue(sessions, delivered, "job.succeeded")
    _enqueue(sessions, given_up, "job.failed")
    _enqueue(sessions, waiting, "job.cancelled")
    with sessions() as session:  # not due yet: stays
        session.execute(update(WebhookDelivery).where(WebhookDelivery.job_id == waiting)
                        .values(next_attempt_at=utcnow() + timedelta(hours=1)))
        session.commit()
    for _ in range(FAST.attempts):
        deliver_due(sessions, FAST)
        time.sleep(FAST.first_delay * 2 ** FAST.attempts)
    with sessions() as session:
        assert session.scalars(select(WebhookDelivery.job_id)).all() == [waiting]
    assert [a["ok"] for a in _attempts(sessions, delivered)] == [True]
    assert len(_attempts(sessions, given_up)) == FAST.attempts


def test_waiting_progress_messages_coalesce_into_the_newest(settings, tenant_id, sessions, receiver):
    job_id = _webhook_job(settings, tenant_id, receiver.url, ["job.progress", "job.succeeded"])
    _enqueue(sessions, job_id, *["job.progress"] * 20, "job.succeeded")
    _drain(sessions)
    assert [(p["type"], p["data"]["n"]) for _, p, _ in receiver.received] == [
        ("job.progress", 19), ("job.succeeded", 20)]


def test_every_terminal_transition_outside_the_worker_sends_its_webhook(settings, tenant_id, sessions, receiver):
    stale = utcnow() - timedelta(seconds=settings.stale_seconds + 5)
    queued = _webhook_job(settings, tenant_id, receiver.url)
    lost = _webhook_job(settings, tenant_id, receiver.url, status="running", attempts=settings.max_attempts,
                        heartbeat_at=stale)
    stuck = _webhook_job(settings, tenant_id, receiver.url, status="cancelling", cancel_requested=True,
                         attempts=1, heartbeat_at=stale)
    with sessions() as session:
        cancel_job(session, tenant_id, queued)  # what DELETE /v1/jobs/{id} runs
    with sessions() as session:
        fail_exhausted(session, settings.stale_seconds)
    _drain(sessions)
    got = {p["data"]["id"]: p for _, p, _ in receiver.received}
    assert {job: (p["type"], p["data"]["status"]) for job, p in got.items()} == {
        queued: ("job.cancelled", "cancelled"), lost: ("job.failed", "failed"), stuck: ("job.cancelled", "cancelled")}
    assert got[lost]["data"]["error"]["code"] == "worker_lost"
    assert all(verified for _, _, verified in receiver.received)


def test_a_message_leased_by_a_deliverer_that_died_goes_out_after_the_lease(settings, tenant_id, sessions, receiver):
    job_id = _webhook_job(settings, tenant_id, receiver.url)
    _enqueue(sessions, job_id, "job.succeeded")
    with sessions() as session:  # a deliverer took it, then its process ended
        session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow() + FAST.lease))
        session.commit()
    assert deliver_due(sessions, FAST) == 0 and receiver.received == []
    with sessions() as session:
        session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    _drain(sessions)
    assert [p["type"] for _, p, _ in receiver.received] == ["job.succeeded"]


def test_the_deliverer_thread_sends_as_soon_as_it_is_woken(settings, tenant_id, sessions, receiver):
    deliverer = Deliverer(sessions, FAST, poll_seconds=30)
    try:
        job_id = _webhook_job(settings, tenant_id, receiver.url)
        _enqueue(sessions, job_id, "job.succeeded")
        deliverer.wake()
        deadline = time.monotonic() + 10
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        deliverer.stop()
    assert [p["type"] for _, p, _ in receiver.received] == ["job.succeeded"]


def test_a_database_outage_is_one_log_line_not_a_traceback_every_few_seconds(monkeypatch, caplog):
    """Issue 28.7: workers and recovery logged a full traceback every 5 s of an outage."""
    import logging
    import time

    from app.core.persistence.db import make_engine, make_session_factory
    from worker import webhooks

    monkeypatch.setattr(webhooks, "ERROR_BACKOFF_SECONDS", 0.05)
    nobody = make_session_factory(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none"))
    with caplog.at_level(logging.INFO, logger="worker.webhooks"):
        delivering = webhooks.Deliverer(nobody)
        time.sleep(1.0)
        delivering.stop()
    records = [r for r in caplog.records if r.name == "worker.webhooks"]
    assert [r.levelname for r in records] == ["WARNING"] and records[0].exc_info is None
    assert "database is unavailable" in records[0].getMessage()
