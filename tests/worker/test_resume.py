"""Issue 25: a job handed back mid-run resumes after its last completed step, byte-identical
to an uninterrupted run; a stopped job keeps the steps it reached; a full store makes a job
wait instead of failing. In-process `run_job` on SQLite and PostgreSQL."""

import errno
import threading

import pytest
from sqlalchemy import func, select

import worker.runner
from app.core.jobs.lifecycle import cancel_job
from app.core.persistence.models import Job, JobEvent, JobStep
from tests.executors.trajectory_files import ARCH, files_in, write_files
from tests.support.digits import digits_spec
from tests.support.jobs import submit_job, upload_files
from tests.support.rows import event_types, load_job
from tests.support.run_cache import cached_dir
from worker.context import worker_context
from worker.runner import STORAGE_FULL, run_job

STEPS = 5


@pytest.fixture
def spec(settings, tenant_id, digits):
    inputs = upload_files(settings, tenant_id, {"theta0": digits.theta0, "thetaT": digits.theta_t,
                                                "train": digits.train, "heldout": digits.heldout})
    return digits_spec(inputs, steps=STEPS, seeds=(1, 2), grad_batches=2)


def _tensor_files(settings, job_id) -> dict[str, str]:
    """sha256 of each result checkpoint by path."""
    return {f["path"]: f["sha256"] for f in load_job(settings, job_id).result["files"]
            if f["path"].endswith(".safetensors")}


def _events(settings, job_id, type_) -> list[dict]:
    with worker_context(settings).sessions() as session:
        return [e.data for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id,
                                                                       JobEvent.type == type_).order_by(JobEvent.id))]


def _after_step(monkeypatch, step: int, then) -> list[int]:
    """Call `then()` once step `step` is recorded; returns the list of steps recorded."""
    recorded = []
    real = worker.runner.record_step

    def record(session, claim, number, *args):
        done = real(session, claim, number, *args)
        recorded.append(number)
        if number == step:
            then()
        return done

    monkeypatch.setattr(worker.runner, "record_step", record)
    return recorded


def test_a_job_handed_back_mid_run_resumes_after_its_last_step_with_identical_results(settings, tenant_id, spec,
                                                                                        monkeypatch):
    clean = submit_job(settings, tenant_id, spec)
    assert run_job(clean, settings) == "succeeded"

    job_id = submit_job(settings, tenant_id, spec)
    shutdown = threading.Event()
    recorded = _after_step(monkeypatch, 2, shutdown.set)
    assert run_job(job_id, settings, shutdown) == "queued"  # a SIGTERM'd worker hands it back
    assert load_job(settings, job_id).progress_step == 2 * 2  # two targets per step
    del recorded[:]
    assert run_job(job_id, settings) == "succeeded"
    assert recorded == [3, 4, 5]  # no step redone
    assert _events(settings, job_id, "resumed") == [{"step": 2, "unit": "step 2", "attempt": 1,
                                                        "worker_id": worker.runner.worker_id()}]
    assert _tensor_files(settings, job_id) == _tensor_files(settings, clean)
    progress = [e["step"] for e in _events(settings, job_id, "progress")]
    assert progress == sorted(progress) and progress[-1] == STEPS * 2
    with worker_context(settings).sessions() as session:  # the job ended: its steps are gone
        assert session.scalar(select(func.count()).select_from(JobStep).where(JobStep.job_id == job_id)) == 0


@pytest.fixture
def trajectory_ids(settings, tenant_id, run_cache):
    """The executor tests' SGD trajectory (8 checkpoints), an independent run and digits, uploaded."""
    files = files_in(cached_dir(run_cache, "sgd-trajectory", write_files))
    return upload_files(settings, tenant_id, {**{f"epoch{i}": p for i, p in enumerate(files.checkpoints)},
                                              "other": files.other_run, "train": files.train, "test": files.test})


def _average_spec(ids):
    return {"kind": "average", "arch": ARCH, "checkpoints": [ids[f"epoch{i}"] for i in range(8)],
            "train_data": ids["train"], "eval_data": ids["test"], "method": {"name": "uniform", "last": 2},
            "sweep": {"last": [1, 2, 4, 3]}, "outputs": {"candidates": True}, "params": {"device": "cpu"}}


def _align_spec(ids):
    return {"kind": "align", "arch": ARCH, "model_a": ids["epoch7"], "model_b": ids["other"],
            "train_data": ids["train"], "eval_data": ids["test"], "outputs": {"merged": True},
            "params": {"device": "cpu", "alphas": [0.0, 0.5, 1.0]}}


@pytest.mark.parametrize(("make_spec", "units", "k", "unit"),
                         [(_average_spec, 4, 2, "candidate uniform last=2"), (_align_spec, 3, 1, "matching"),
                          (_align_spec, 3, 2, "plain curve")], ids=["average", "align-matched", "align-curve"])
def test_average_and_align_jobs_handed_back_resume_at_their_unit_with_identical_results(
        settings, tenant_id, trajectory_ids, make_spec, units, k, unit, monkeypatch):
    spec = make_spec(trajectory_ids)
    clean = submit_job(settings, tenant_id, spec)
    assert run_job(clean, settings) == "succeeded"

    job_id = submit_job(settings, tenant_id, spec)
    shutdown = threading.Event()
    recorded = _after_step(monkeypatch, k, shutdown.set)
    assert run_job(job_id, settings, shutdown) == "queued"
    shown = load_job(settings, job_id).progress_step
    del recorded[:]
    assert run_job(job_id, settings) == "succeeded"
    assert recorded == list(range(k + 1, units + 1))  # no unit redone
    assert _events(settings, job_id, "resumed") == [{"step": k, "unit": unit, "attempt": 1,
                                                     "worker_id": worker.runner.worker_id()}]
    assert _tensor_files(settings, job_id) == _tensor_files(settings, clean)
    progress = [e["step"] for e in _events(settings, job_id, "progress")]
    assert progress == sorted(progress) and all(step > shown for step in progress[-(units - k):])


@pytest.mark.parametrize("keep", [True, False])
def test_a_cancelled_transfer_keeps_the_steps_it_reached_as_partial_results(settings, tenant_id, spec, keep,
                                                                             monkeypatch):
    spec["outputs"] = {"partial_on_stop": keep}
    job_id = submit_job(settings, tenant_id, spec)

    def cancel():
        with worker_context(settings).sessions() as session:
            assert cancel_job(session, tenant_id, job_id).status == "cancelling"

    _after_step(monkeypatch, 3, cancel)
    monkeypatch.setattr(worker.runner, "CANCEL_CHECK_INTERVAL", 0.0)  # seen before step 4 ends
    assert run_job(job_id, settings) == "cancelled"
    job = load_job(settings, job_id)
    if not keep:
        assert job.result is None
        return
    lasts = [f for f in job.result["files"] if f["role"] == "last"]
    assert [f["metadata"] for f in lasts] == [{"step": 3, "partial": True}] * 2
    assert all(f["metadata"]["partial"] and f["metadata"]["step"] <= 3
               for f in job.result["files"] if f["role"] == "best")
    assert job.summary["partial"] is True and job.summary["reached_step"] == 3
    assert _events(settings, job_id, "cancelled")[-1] == {"partial": True}


def test_a_full_store_hands_the_job_back_to_wait_and_it_finishes_once_there_is_room(settings, tenant_id, spec,
                                                                                   monkeypatch):
    job_id = submit_job(settings, tenant_id, spec)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(worker.runner, "record_result", full)
    assert run_job(job_id, settings) == STORAGE_FULL
    job = load_job(settings, job_id)
    assert (job.status, job.attempts, job.error_code) == ("queued", 0, None)
    assert event_types(settings, job_id)[-2:] == ["storage_full", "released"]
    monkeypatch.undo()
    assert run_job(job_id, settings) == "succeeded"
    assert _events(settings, job_id, "resumed")[0]["step"] == STEPS  # nothing recomputed


def test_a_job_whose_attempt_ran_past_the_time_limit_fails_at_once(settings, tenant_id, spec):
    from datetime import timedelta

    from app.core.persistence.models import utcnow
    limit = settings.job_time_limit_seconds
    started = utcnow() - timedelta(seconds=limit + settings.stale_seconds + 10)
    job_id = submit_job(settings, tenant_id, spec, status="running", attempts=1, worker_id="gone:1",
                        started_at=started, heartbeat_at=started + timedelta(seconds=limit + 1))
    assert run_job(job_id, settings) is None
    job = load_job(settings, job_id)
    assert (job.status, job.error_code, job.attempts) == ("failed", "time_limit_exceeded", 1)
    with worker_context(settings).sessions() as session:
        assert session.scalar(select(Job.error_message).where(Job.id == job_id)).startswith("the job ran past")
