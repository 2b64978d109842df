"""Between the engine's end and the final commit: a late cancel keeps nothing, and a
concurrent delete of identical bytes cannot remove a result's blob."""


from sqlalchemy import select

import worker.runner
from app.core.jobs.lifecycle import cancel_job
from app.core.persistence.models import Artifact
from app.core.storage.artifacts import drop_blob_if_unused
from app.core.storage.local_store import LocalStore
from tests.support.digits import digits_spec
from tests.support.jobs import submit_job, upload_files
from tests.support.rows import event_types, load_job
from worker.context import worker_context
from worker.runner import run_job


def _blobs(store: LocalStore) -> set[str]:
    return {p.name for p in store.root.glob("??/??/*") if p.is_file()}


def _inputs(settings, tenant_id, digits) -> dict[str, str]:
    return upload_files(settings, tenant_id, {"theta0": digits.theta0, "thetaT": digits.theta_t,
                                              "train": digits.train, "heldout": digits.heldout})


def test_a_cancel_between_engine_end_and_finish_keeps_no_results(settings, tenant_id, digits, monkeypatch):
    store = worker_context(settings).store
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
        artifact = real_record(*args, **kwargs)
        stored.append(artifact.sha256)
        return artifact

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


def test_a_delete_of_identical_bytes_during_the_results_commit_loses_nothing(settings, tenant_id, digits,
                                                                          monkeypatch):
    """Another artifact with a result's bytes is deleted while the results are uncommitted:
    the delete does not wait (no lock) and removes the blob, since no committed row uses it
    yet; the job republishes it from its own copy once its rows have committed."""
    store = worker_context(settings).store
    inputs = _inputs(settings, tenant_id, digits)
    job_id = submit_job(settings, tenant_id, digits_spec(inputs, steps=2))
    deleted = []

    def store_result_then_delete_its_bytes(*args, **kwargs):
        artifact = real_record(*args, **kwargs)
        if not deleted:  # what `delete_artifact` does once its own row is gone, on its own session
            with worker_context(settings).sessions() as session:
                deleted.append(drop_blob_if_unused(session, store, artifact.sha256))
        return artifact

    real_record = worker.runner.record_result
    monkeypatch.setattr(worker.runner, "record_result", store_result_then_delete_its_bytes)

    assert run_job(job_id, settings) == "succeeded"
    assert deleted == [True]
    with worker_context(settings).sessions() as session:
        results = session.scalars(select(Artifact).where(Artifact.producer_job_id == job_id)).all()
    assert results and all(store.exists(a.sha256) for a in results)
