"""Between the engine's end and the final commit: a late cancel keeps nothing, a vanished
result blob is restored."""

import pytest
from sqlalchemy import select

import worker.jobs
from app.core.artifacts import create_artifact_from_file
from app.core.jobs import cancel_job
from app.core.models import Artifact
from app.core.storage import ArtifactStore
from tests.worker.digits import digits_spec, write_digits_source
from tests.worker.factories import event_types, load_job, make_job
from worker.context import worker_context
from worker.jobs import run_job


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits_source(tmp_path_factory.mktemp("digits"))


def _blobs(store: ArtifactStore) -> set[str]:
    return {p.name for p in store.root.glob("??/??/*") if p.is_file()}


def _inputs(settings, tenant_id, digits, store: ArtifactStore) -> dict[str, str]:
    with worker_context(settings).sessions() as session:
        inputs = {role: create_artifact_from_file(session, tenant_id, path, path.name, None, store=store).id
                  for role, path in {"theta0": digits.theta0, "thetaT": digits.theta_t,
                                     "train": digits.train, "heldout": digits.heldout}.items()}
        session.commit()
    return inputs


def test_a_cancel_between_engine_end_and_finish_keeps_no_results(settings, tenant_id, digits, monkeypatch):
    store = ArtifactStore(settings.storage_dir)
    inputs = _inputs(settings, tenant_id, digits, store)
    input_blobs = _blobs(store)
    job_id = make_job(settings, tenant_id, spec=digits_spec(inputs, steps=2))
    stored = []

    def store_result_then_cancel(*args, **kwargs):
        # The engine is done and the first result is being stored: the user cancels now,
        # through the API's own function, on its own database session.
        if not stored:
            with worker_context(settings).sessions() as api_session:
                assert cancel_job(api_session, tenant_id, job_id).status == "cancelling"
        artifact = real_create(*args, **kwargs)
        stored.append(artifact.sha256)
        return artifact

    real_create = worker.jobs.create_artifact_from_file
    monkeypatch.setattr(worker.jobs, "create_artifact_from_file", store_result_then_cancel)

    assert run_job(job_id, settings) == "cancelled"

    job = load_job(settings, job_id)
    assert (job.status, job.result, job.summary, job.error_code) == ("cancelled", None, None, None)
    assert len(stored) >= 3  # every result file was written before finishing noticed the cancel
    with worker_context(settings).sessions() as session:
        assert session.scalars(select(Artifact.id).where(Artifact.producer_job_id == job_id)).all() == []
    assert _blobs(store) == input_blobs  # the results' bytes are gone, the inputs' kept
    types = event_types(settings, job_id)
    assert types[-1] == "cancelled" and "succeeded" not in types


def test_a_result_blob_deleted_before_the_commit_is_restored(settings, tenant_id, digits, monkeypatch):
    """Another artifact with the same bytes is deleted while the results are uncommitted:
    the delete sees no live row and unlinks the blob; the finished job puts it back."""
    store = ArtifactStore(settings.storage_dir)
    inputs = _inputs(settings, tenant_id, digits, store)
    job_id = make_job(settings, tenant_id, spec=digits_spec(inputs, steps=2))
    removed = []

    def store_result_then_lose_its_blob(*args, **kwargs):
        artifact = real_create(*args, **kwargs)
        if not removed:
            with store.lock(artifact.sha256):  # what a concurrent delete does
                store.delete(artifact.sha256)
            removed.append(artifact.sha256)
        return artifact

    real_create = worker.jobs.create_artifact_from_file
    monkeypatch.setattr(worker.jobs, "create_artifact_from_file", store_result_then_lose_its_blob)

    assert run_job(job_id, settings) == "succeeded"
    assert removed and store.exists(removed[0])
    with worker_context(settings).sessions() as session:
        results = session.scalars(select(Artifact).where(Artifact.producer_job_id == job_id)).all()
    assert results and all(store.exists(a.sha256) for a in results)
