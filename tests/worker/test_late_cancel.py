"""Between the engine's end and the final commit: a late cancel keeps nothing, and a
concurrent delete of identical bytes cannot remove a result's blob."""

import threading

from sqlalchemy import select

import worker.runner
from app.core.jobs.lifecycle import cancel_job
from app.core.persistence.models import Artifact
from app.core.storage.artifacts import blob_in_use
from app.core.storage.store import ArtifactStore
from tests.support.digits import digits_spec
from tests.support.jobs import submit_job, upload_files
from tests.support.rows import event_types, load_job
from worker.context import worker_context
from worker.runner import run_job


def _blobs(store: ArtifactStore) -> set[str]:
    return {p.name for p in store.root.glob("??/??/*") if p.is_file()}


def _inputs(settings, tenant_id, digits) -> dict[str, str]:
    return upload_files(settings, tenant_id, {"theta0": digits.theta0, "thetaT": digits.theta_t,
                                              "train": digits.train, "heldout": digits.heldout})


def test_a_cancel_between_engine_end_and_finish_keeps_no_results(settings, tenant_id, digits, monkeypatch):
    store = ArtifactStore(settings.storage_dir)
    inputs = _inputs(settings, tenant_id, digits)
    input_blobs = _blobs(store)
    job_id = submit_job(settings, tenant_id, digits_spec(inputs, steps=2))
    stored = []

    def store_result_then_cancel(*args, **kwargs):
        # The engine is done and the first result is being stored: the user cancels now,
        # through the API's own function, on its own database session.
        if not stored:
            with worker_context(settings).sessions() as api_session:
                assert cancel_job(api_session, tenant_id, job_id).status == "cancelling"
        artifact, new_blob = real_record(*args, **kwargs)
        stored.append(artifact.sha256)
        return artifact, new_blob

    real_record = worker.runner.record_result
    monkeypatch.setattr(worker.runner, "record_result", store_result_then_cancel)

    assert run_job(job_id, settings) == "cancelled"

    job = load_job(settings, job_id)
    assert (job.status, job.result, job.summary, job.error_code) == ("cancelled", None, None, None)
    assert len(stored) >= 3  # every result file was written before finishing noticed the cancel
    with worker_context(settings).sessions() as session:
        assert session.scalars(select(Artifact.id).where(Artifact.producer_job_id == job_id)).all() == []
    assert _blobs(store) == input_blobs  # the results' bytes are gone, the inputs' kept
    types = event_types(settings, job_id)
    assert types[-1] == "cancelled" and "succeeded" not in types


def test_a_delete_of_identical_bytes_waits_for_the_results_to_commit(settings, tenant_id, digits, monkeypatch):
    """Another artifact with a result's bytes is deleted while the results are uncommitted:
    the delete waits on the blob's lock, then sees the job's live row and keeps the blob."""
    store = ArtifactStore(settings.storage_dir)
    inputs = _inputs(settings, tenant_id, digits)
    job_id = submit_job(settings, tenant_id, digits_spec(inputs, steps=2))
    deletes: list[threading.Thread] = []
    deleted = []

    def concurrent_delete(sha256: str) -> None:  # what `delete_artifact` does once its row is gone
        with store.lock(sha256), worker_context(settings).sessions() as session:
            if not blob_in_use(session, sha256):
                store.delete(sha256)
                deleted.append(sha256)

    def store_result_then_delete_its_bytes(*args, **kwargs):
        artifact, new_blob = real_record(*args, **kwargs)
        if not deletes:
            deletes.append(threading.Thread(target=concurrent_delete, args=(artifact.sha256,)))
            deletes[0].start()
        return artifact, new_blob

    real_record = worker.runner.record_result
    monkeypatch.setattr(worker.runner, "record_result", store_result_then_delete_its_bytes)

    assert run_job(job_id, settings) == "succeeded"
    deletes[0].join(timeout=60)
    assert not deletes[0].is_alive() and deleted == []
    with worker_context(settings).sessions() as session:
        results = session.scalars(select(Artifact).where(Artifact.producer_job_id == job_id)).all()
    assert results and all(store.exists(a.sha256) for a in results)
