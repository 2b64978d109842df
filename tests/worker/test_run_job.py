"""`run_job` in-process on SQLite with the real runner: outcomes and their error codes."""

import pytest
from sqlalchemy import select, update

from app.core.persistence.models import Artifact, JobEvent, utcnow
from tests.support.digits import digits_spec
from tests.support.jobs import submit_job, upload_files
from tests.support.rows import event_types, load_job
from trajx.executors import registry
from worker.context import worker_context
from worker.runner import run_job

# The claim SQL runs on both backends in test_claim.py; the engine does not care.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def uploaded(settings, tenant_id, digits) -> dict[str, str]:
    """The digits files as artifacts of the tenant, by role."""
    return upload_files(settings, tenant_id, {"theta0": digits.theta0, "thetaT": digits.theta_t,
                                              "train": digits.train, "heldout": digits.heldout})


def test_a_job_runs_once_and_stores_its_results_as_artifacts(settings, tenant_id, uploaded):
    job_id = submit_job(settings, tenant_id, digits_spec(uploaded, steps=2, seeds=(1, 2)))
    assert run_job(job_id, settings) == "succeeded"
    assert run_job(job_id, settings) is None  # finished: nothing to claim
    job = load_job(settings, job_id)
    assert (job.attempts, job.progress_step, job.progress_total) == (1, 4, 4)
    assert all(t["last_accuracy"] > 0.1 for t in job.summary["targets"])
    with worker_context(settings).sessions() as session:
        produced = {a.id: a for a in session.scalars(select(Artifact).where(Artifact.producer_job_id == job_id))}
    files = {(f["target"], f["role"]): f for f in job.result["files"]}
    assert set(files) == {(t, role) for t in (0, 1) for role in ("last", "best", "permutations", "metrics")} \
        | {(None, "report")}
    assert {f["artifact"] for f in files.values()} == set(produced)
    for file in files.values():  # stored as the executor's manifest says
        artifact = produced[file["artifact"]]
        assert (artifact.sha256, artifact.size, artifact.kind) == (file["sha256"], file["size"], "result")
    assert produced[files[(1, "last")]["artifact"]].name == "target-1-last.safetensors"
    assert produced[files[(None, "report")]["artifact"]].format == "json"
    types = event_types(settings, job_id)
    assert types[:2] == ["created", "started"] and types.count("started") == 1
    assert types[-2:] == ["succeeded", "claim_refused"]  # the second run_job found it finished


def test_a_deleted_input_fails_the_job_naming_it(settings, tenant_id, uploaded):
    job_id = submit_job(settings, tenant_id, digits_spec(uploaded, steps=2))
    with worker_context(settings).sessions() as session:
        session.execute(update(Artifact).where(Artifact.id == uploaded["train"]).values(deleted_at=utcnow()))
        session.commit()
    assert run_job(job_id, settings) == "failed"
    job = load_job(settings, job_id)
    assert job.error_code == "artifact_not_found" and "train_data" in job.error_message


def test_a_cancel_requested_before_the_first_step_keeps_nothing(settings, tenant_id, uploaded):
    job_id = submit_job(settings, tenant_id, digits_spec(uploaded, steps=2), cancel_requested=True)
    assert run_job(job_id, settings) == "cancelled"
    job = load_job(settings, job_id)
    assert job.result is None and job.error_code is None


def test_a_job_past_its_time_limit_fails_with_a_clear_code(settings, tenant_id, uploaded):
    settings = settings.model_copy(update={"job_time_limit_seconds": 1e-6})
    job_id = submit_job(settings, tenant_id, digits_spec(uploaded, steps=2))
    assert run_job(job_id, settings) == "failed"
    assert load_job(settings, job_id).error_code == "time_limit_exceeded"


def test_an_unexpected_error_fails_the_job_with_internal_error(settings, tenant_id, uploaded):
    spec = digits_spec(uploaded, steps=2)
    # A stored spec the current models refuse (e.g. written by another version): no code for it.
    job_id = submit_job(settings, tenant_id, spec, spec={**spec, "params": {**spec["params"], "steps": "many"}})
    assert run_job(job_id, settings) == "failed"
    job = load_job(settings, job_id)
    assert job.error_code == "internal_error" and "ValidationError" in job.error_message


def test_an_allocation_failure_fails_the_job_with_out_of_memory(settings, tenant_id, uploaded, monkeypatch):
    def allocate(*_, **__):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 4398046511104 bytes")

    monkeypatch.setattr(registry, "_EXECUTORS", {**registry._EXECUTORS, "transfer": allocate})
    job_id = submit_job(settings, tenant_id, digits_spec(uploaded, steps=2))
    assert run_job(job_id, settings) == "failed"
    assert load_job(settings, job_id).error_code == "out_of_memory"


def test_progress_events_carry_every_step_of_every_target_once(settings, tenant_id, uploaded):
    job_id = submit_job(settings, tenant_id, digits_spec(uploaded, steps=6, seeds=(1, 2)))
    assert run_job(job_id, settings) == "succeeded"
    with worker_context(settings).sessions() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "progress")
                                 .order_by(JobEvent.id)).all()
    carried = [(s["target"], s["target_step"]) for e in events for s in e.data["steps"]]
    assert sorted(carried) == [(t, s) for t in (0, 1) for s in range(1, 7)]  # each once, none missing
    assert all("accuracy" in s["metrics"] for e in events for s in e.data["steps"])
    assert (events[-1].data["target"], events[-1].data["target_step"]) in carried  # the newest is included
