"""End to end over HTTP on PostgreSQL + Redis with a real Celery worker and recovery loop.

One stack per module (API under uvicorn, `celery worker -c 1`, `worker.recovery`);
crashes are real: SIGKILL of the job's process, a Redis shutdown (of the module's private
Redis server), an API restart.
"""

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sqlalchemy import select, text

from app.core.jobs.dispatch_backends import CeleryDispatcher
from app.core.persistence.db import make_engine, make_session_factory
from app.core.persistence.models import Artifact
from app.core.settings import Settings
from tests.support.digits import DigitsFiles, digits_spec
from tests.support.receiver import WebhookReceiver
from tests.support.services import Service, celery_stack, redis_restarted
from trajx.client import Client, Job
from trajx.demo.source import accuracy

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

# About 3 s of FGMT on this machine when idle (10 s when busy): long enough to interrupt.
LONG = {"steps": 40, "grad_batches": 4}
QUICK_STEPS = 3


@dataclass
class Stack:
    settings: Settings
    broker: Service
    worker: Service
    api: Service
    client: Client
    ids: dict[str, str]
    digits: DigitsFiles


@pytest.fixture(scope="module")
def stack(postgres_database, redis_server, digits, tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("celery-stack")
    with celery_stack(postgres_database, root, redis_server.url) as running, \
            Client(running.api.url, running.api_key, timeout=10) as client:
        yield Stack(running.settings, redis_server, running.worker, running.api, client, digits.upload(client),
                    digits)


def _wait(stack: Stack, job: Job, timeout: float = 60) -> Job:
    done = stack.client.wait(job.id, timeout=timeout, poll_interval=0.1, max_interval=0.5)
    assert done.done, done
    return done


def _wait_running(stack: Stack, job: Job, min_step: int = 1, timeout: float = 30) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stack.client.get_job(job.id)
        if job.status == "running" and (job.progress.step or 0) >= min_step:
            return job
        assert not job.done, f"job ended before it could be interrupted: {job}"
        time.sleep(0.05)
    raise AssertionError(f"job {job.id} never ran: {job}\n{stack.worker.log_tail()}")


def _event_types(stack: Stack, job: Job) -> list[str]:
    return [event.type for event in stack.client.events(job.id)]


def _last_accuracy(stack: Stack, job: Job, tmp_path: Path) -> float:
    path = stack.client.download_result(job.result_file("last", 0), tmp_path / job.id)
    return accuracy(load_file(path), stack.digits.split)


def test_fgmt_job_runs_end_to_end_and_beats_naive(stack, tmp_path):
    jobs = {method: stack.client.create_job(digits_spec(stack.ids, method)) for method in ("fgmt", "naive")}
    done = {method: _wait(stack, job) for method, job in jobs.items()}
    for job in done.values():
        assert job.status == "succeeded", job.error
        assert job.attempts == 1 and job.progress.step == job.progress.total > 0
        assert job.result_file("last", 0) and job.result_file("best", 0) and job.result_file("report")
    fgmt, naive = (_last_accuracy(stack, done[m], tmp_path) for m in ("fgmt", "naive"))
    assert fgmt > naive + 0.1, (fgmt, naive)  # measured here: 0.78 vs 0.54
    assert done["fgmt"].summary["targets"][0]["last_accuracy"] == pytest.approx(fgmt, abs=0.02)
    types = _event_types(stack, done["fgmt"])
    assert types[:2] == ["created", "started"] and types.count("started") == 1 and "progress" in types
    assert types[-1] == "succeeded"


def test_duplicated_messages_run_the_job_once(stack):
    job = stack.client.create_job(digits_spec(stack.ids, steps=QUICK_STEPS))  # the API sends one message
    dispatcher = CeleryDispatcher(stack.settings)
    dispatcher.dispatch(job.id, job.raw["queue"])
    dispatcher.dispatch(job.id, job.raw["queue"])
    # Every message leaves an event when a worker takes it: `started` for the one that
    # claims the job, `claim_refused` for any other. Wait until all three have been taken,
    # however late a duplicate arrives (before or after the job finished).
    types = _wait_for_events(stack, job, lambda t: t.count("started") + t.count("claim_refused") >= 3)
    job = _wait(stack, job)
    assert job.status == "succeeded" and job.attempts == 1
    assert types.count("started") == 1 and types.count("claim_refused") == 2, types


def _wait_for_events(stack: Stack, job: Job, enough, timeout: float = 120) -> list[str]:
    """The job's event types once `enough(types)` holds; fails after `timeout` (a hang, not a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        types = _event_types(stack, job)
        if enough(types):
            return types
        assert time.monotonic() < deadline, f"events never got there: {types}\n{stack.worker.log_tail()}"
        time.sleep(0.1)


def test_killed_worker_process_job_resumes_from_its_step_and_matches_a_clean_run(stack):
    """Issue 25.6: SIGKILL at step k; the next worker process resumes after step k (at most
    one step redone), and the result checkpoints are byte-identical to an uninterrupted run."""
    clean = stack.client.create_job(digits_spec(stack.ids, **LONG))
    clean = _wait(stack, clean, timeout=90)
    job = stack.client.create_job(digits_spec(stack.ids, **LONG))
    reached = _wait_running(stack, job, min_step=3).progress.step
    killed = _worker_pid(stack, job)
    os.kill(killed, signal.SIGKILL)
    job = _wait(stack, job, timeout=90)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    events = stack.client.events(job.id)
    resumed = [e.data for e in events if e.type == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] >= reached - 1, (resumed, reached)
    assert not resumed[0]["worker_id"].endswith(f":{killed}")
    assert [e.type for e in events].count("started") == 2
    shown = [e.data["step"] for e in events if e.type == "progress"]
    assert shown == sorted(shown)  # progress never went back
    assert _checkpoints(job) == _checkpoints(clean)


def _checkpoints(job: Job) -> dict[tuple[int | None, str], str]:
    return {(f.target, f.role): f.sha256 for f in job.files if f.path.endswith(".safetensors")}


def test_queued_job_survives_a_redis_restart(stack):
    busy = stack.client.create_job(digits_spec(stack.ids, **LONG))
    _wait_running(stack, busy)
    queued = stack.client.create_job(digits_spec(stack.ids, steps=QUICK_STEPS))
    assert stack.client.get_job(queued.id).status == "queued"
    with redis_restarted(stack.broker):
        pass
    for job in (busy, queued):
        assert _wait(stack, job, timeout=120).status == "succeeded"


def test_api_restart_mid_job_loses_nothing(stack):
    job = stack.client.create_job(digits_spec(stack.ids, **LONG))
    _wait_running(stack, job)
    stack.api.stop()
    stack.api.start()
    job = _wait(stack, job)
    assert job.status == "succeeded" and job.attempts == 1


def test_cancel_of_queued_and_running_jobs(stack):
    running = stack.client.create_job(digits_spec(stack.ids, **LONG))
    queued = stack.client.create_job(digits_spec(stack.ids, steps=QUICK_STEPS))
    assert stack.client.cancel(queued.id).status == "cancelled"
    _wait_running(stack, running)
    assert stack.client.cancel(running.id).status == "cancelling"
    running = _wait(stack, running)
    assert running.status == "cancelled" and running.progress.step < running.progress.total
    # It keeps the steps it reached (outputs.partial_on_stop, on by default), marked partial.
    assert running.summary["partial"] is True and running.summary["reached_step"] < LONG["steps"]
    assert running.result_file("last", 0).metadata["partial"] is True
    assert sorted(_produced_artifacts(stack, running)) == sorted(f.artifact for f in running.files)
    assert stack.client.get_job(queued.id).attempts == 0


def test_checkpoints_that_do_not_fit_the_architecture_fail_fast(stack):
    spec = digits_spec(stack.ids, arch_config={"in_features": 64, "hidden": [32], "num_classes": 10})
    job = _wait(stack, stack.client.create_job(spec))
    assert job.status == "failed" and job.error.code == "checkpoint_mismatch", job.error
    # Fast means before any engine work: no step ran, no progress was reported.
    assert job.attempts == 1 and job.progress.step == 0 and "progress" not in _event_types(stack, job)


def test_webhook_deliveries_are_signed_and_recorded(stack):
    with WebhookReceiver() as receiver:
        job = stack.client.create_job(digits_spec(stack.ids, steps=QUICK_STEPS), webhook={
            "url": receiver.url, "events": ["job.running", "job.succeeded"]})
        job = _wait(stack, job)
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [payload["type"] for _, payload, _ in receiver.received] == ["job.running", "job.succeeded"]
    assert receiver.verify_all(job.raw["webhook"]["secret"])
    final = receiver.received[-1][1]["data"]
    assert final["id"] == job.id and final["result"] == job.result
    deliveries = [e.data for e in stack.client.events(job.id) if e.type == "webhook"]
    assert [(d["event"], d["ok"]) for d in deliveries] == [("job.running", True), ("job.succeeded", True)]


def test_warm_shutdown_hands_the_running_job_to_the_next_worker(stack):
    job = stack.client.create_job(digits_spec(stack.ids, **LONG))
    _wait_running(stack, job)
    os.kill(stack.worker.process.pid, signal.SIGTERM)  # what `docker stop` sends
    assert stack.worker.process.wait(30) == 0
    released = stack.client.get_job(job.id)
    assert (released.status, released.attempts) == ("queued", 0)
    stack.worker.start()
    job = _wait(stack, job)
    assert job.status == "succeeded" and job.attempts == 1
    types = _event_types(stack, job)
    assert types.count("started") == 2 and "released" in types


def _worker_pid(stack: Stack, job: Job) -> int:
    engine = make_engine(stack.settings.database_url)
    try:
        with engine.connect() as connection:
            worker_id = connection.execute(text("SELECT worker_id FROM jobs WHERE id = :id"),
                                           {"id": job.id}).scalar_one()
    finally:
        engine.dispose()
    return int(worker_id.rsplit(":", 1)[1])


def _produced_artifacts(stack: Stack, job: Job) -> list[str]:
    engine = make_engine(stack.settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(Artifact.id).where(Artifact.producer_job_id == job.id)))
    finally:
        engine.dispose()
