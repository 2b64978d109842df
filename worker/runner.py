"""`run_job(job_id)`: the one job function every execution path calls.

Claim the job atomically, run its kind's executor on the input artifacts the API
resolved (`job_artifacts`) with progress, heartbeat and cancel callbacks, then move the
result files of its manifest into the store as artifacts of the job's tenant and finish
the job in one transaction. Whatever happens, the job
ends `succeeded`, `failed` (with a stable code) or `cancelled`; on a clean shutdown (or a
full store) it goes back to `queued`; if this process dies, it stays `running` until it
is known lost (`worker.lost_jobs`) or its heartbeat goes stale, and runs again.

After each completed step the executor's checkpoint is recorded (`app.core.jobs.steps`),
so the next attempt resumes after it (a `resumed` event); a job stopped early keeps the
steps it reached as partial results when the executor offers them (docs/reliability.md).
"""

import errno
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import QuotaExceeded
from app.core.jobs.claim import (
    Claim,
    add_event,
    cancel_requested,
    claim_job,
    finish,
    heartbeat,
    release,
)
from app.core.jobs.fair_share import DEFERRED
from app.core.jobs.outbox import PROGRESS, enqueue
from app.core.jobs.steps import record_step, recorded_steps
from app.core.persistence.models import Artifact, Job, JobArtifact
from app.core.persistence.outage import is_unavailable
from app.core.settings import Settings, get_settings
from app.core.storage.artifacts import drop_blob_if_unused, record_result
from app.core.storage.errors import StorageFull, StorageUnavailable
from app.core.storage.temp_files import work_dir
from app.core.tenancy.limits import check_stored_bytes
from trajx.errors import Cancelled, InvalidInput, TrajxError, is_out_of_memory
from trajx.executors import (
    Checkpoint,
    Resolve,
    ResultManifest,
    RunContext,
    RunProgress,
    executor_for,
)
from trajx.job_spec import parse_job_spec
from worker.context import WorkerContext, worker_context
from worker.lost_jobs import expire_lost_jobs, running_here, worker_id
from worker.webhooks import deliverer

log = logging.getLogger(__name__)

# Progress rows are throttled: a fast job must not turn into a database benchmark.
PROGRESS_MIN_INTERVAL = 0.5
CANCEL_CHECK_INTERVAL = 0.25
# Backoff while the artifact store is unreachable (bounded by TRAJX_STORAGE_RETRY_SECONDS).
STORAGE_RETRY_FIRST_PAUSE = 0.5
STORAGE_RETRY_MAX_PAUSE = 8.0
T = TypeVar("T")
# What run_job returns for a job handed back because the store is full (tried again later).
STORAGE_FULL = "storage_full"


def run_job(job_id: str, settings: Settings | None = None,
            shutdown: threading.Event | None = None) -> str | None:
    """Run job `job_id` to completion if this process can claim it.

    Returns the job's final status; "queued" when `shutdown` was set and the job went
    back to the queue at its next step check; DEFERRED when its tenant already runs
    TRAJX_TENANT_MAX_RUNNING_JOBS jobs (it stays queued); None when the job was not claimable
    (finished, running elsewhere, or out of attempts: then failed with `worker_lost`)
    or the claim was lost while running. Database errors propagate: the job keeps its
    stale heartbeat and recovery re-runs it.
    """
    ctx = worker_context(settings or get_settings())
    with running_here(job_id):
        with ctx.sessions() as session:
            expire_lost_jobs(session, ctx.settings)
            claim = claim_job(session, job_id, worker_id(), ctx.settings.stale_seconds,
                              ctx.settings.tenant_max_running_jobs, ctx.settings.job_time_limit_seconds)
            if claim is None:
                # Still claimable but not claimed: only the tenant's running quota refuses that.
                waiting = session.scalar(select(Job.id).where(Job.id == job_id, Job.status == "queued",
                                                              Job.attempts < Job.max_attempts))
                session.rollback()
                return DEFERRED if waiting else None
        return _JobRun(ctx, claim, shutdown or threading.Event()).run()


def is_storage_full(exc: BaseException) -> bool:
    """A write failed because the disk is full (OSError, or safetensors' wrapped I/O error)."""
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "(os error 28)" in str(exc)


class _JobRun:
    """One attempt at one job, owned through `claim`."""

    def __init__(self, ctx: WorkerContext, claim: Claim, shutdown: threading.Event) -> None:
        self.ctx = ctx
        self.claim = claim
        self.shutdown = shutdown
        with ctx.sessions() as session:
            job = session.get(Job, claim.job_id)
            self.tenant_id = job.tenant_id
            self.spec_data = job.spec
            # Webhook messages go to the outbox with each transition; this process's
            # deliverer sends them (and, should this process end, any other one does).
            self.webhooks = deliverer(ctx.settings) if job.webhook_url else None
        self.resume = self._resume_point()
        self.partial: Callable[[], ResultManifest] | None = None  # what a stop keeps (`on_partial`)
        self.lost = threading.Event()
        self.deadline = time.monotonic() + ctx.settings.job_time_limit_seconds
        self._unreported: list[dict[str, Any]] = []  # what finished since the last progress event
        self._latest: RunProgress | None = None
        self._last_progress = 0.0
        self._last_cancel_check = 0.0

    def _resume_point(self) -> list[Checkpoint]:
        """The steps earlier attempts completed (recorded one by one), with a `resumed` event
        naming the last (its number, and the unit it was for any job kind)."""
        with self.ctx.sessions() as session:
            steps = recorded_steps(session, self.claim.job_id)
            if steps:
                last = steps[-1]
                add_event(session, self.claim.job_id, "resumed",
                          {"step": last.step, "unit": last.data.get("unit"), "attempt": self.claim.attempt,
                           "worker_id": self.claim.worker_id})
                session.commit()
                log.info("job %s: resumed after step %d (%s)", self.claim.job_id, last.step, last.data.get("unit"))
        return [Checkpoint(row.step, row.state, row.data) for row in steps]

    def run(self) -> str | None:
        stop_heartbeat = threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(stop_heartbeat,),
                                name=f"heartbeat-{self.claim.job_id}", daemon=True)
        beat.start()
        try:
            status = self._run_and_finish()
        finally:
            stop_heartbeat.set()
            beat.join()
        return status

    def _run_and_finish(self) -> str | None:
        if self.webhooks is not None:
            self.webhooks.wake()  # the claim queued `job.running`
        with work_dir(self.ctx.store.tmp_dir, prefix=f"{self.claim.job_id}-") as tmp:
            out_dir = Path(tmp)
            try:
                spec = parse_job_spec(self.spec_data)
                resolve = self._input_resolver(out_dir / "inputs")
                context = RunContext(self._on_progress, self._should_cancel, resume=self.resume,
                                     on_checkpoint=self._on_checkpoint, on_partial=self._offer_partial)
                manifest = executor_for(spec.kind)(spec, resolve, out_dir, context)
                return self._store_and_finish(out_dir, manifest, "succeeded", {})
            except Cancelled:
                if self.lost.is_set():
                    log.warning("job %s: claim lost, another worker owns it now", self.claim.job_id)
                    return None
                if self.shutdown.is_set():
                    with self.ctx.sessions() as session:
                        if release(session, self.claim):
                            return "queued"
                if time.monotonic() >= self.deadline:
                    return self._fail(out_dir, "time_limit_exceeded",
                                      f"the job ran past {self.ctx.settings.job_time_limit_seconds:g} s")
                return self._end(out_dir, "cancelled", {})
            except StorageUnavailable:
                # Still away after TRAJX_STORAGE_RETRY_SECONDS of retries: not the job's fault.
                # It stays running, its heartbeat goes stale and recovery runs it again.
                raise
            except StorageFull as exc:
                return self._hand_back_storage_full(exc)
            except TrajxError as exc:
                # Details name tensors, shapes, fields: make them JSON whatever their type.
                return self._fail(out_dir, exc.code, exc.message,
                                  json.loads(json.dumps(exc.details, default=str)))
            except Exception as exc:
                if is_unavailable(exc):
                    # Not the job's fault: it stays running until this process (or another
                    # on this host) sees the database again and marks it lost
                    # (`expire_lost_jobs`), or its heartbeat goes stale; then it runs again.
                    raise
                if is_storage_full(exc):
                    return self._hand_back_storage_full(exc)
                if is_out_of_memory(exc):
                    return self._fail(out_dir, "out_of_memory", f"{type(exc).__name__}: {exc}")
                log.exception("job %s failed", self.claim.job_id)
                return self._fail(out_dir, "internal_error", f"{type(exc).__name__}: {exc}")

    def _hand_back_storage_full(self, exc: BaseException) -> str | None:
        """The store is full: the job goes back to the queue (its steps kept, the attempt not
        counted) with a `storage_full` event, and is tried again later, not failed."""
        log.warning("job %s: the store is full (%s); handed back to be tried again", self.claim.job_id, exc)
        with self.ctx.sessions() as session:
            add_event(session, self.claim.job_id, STORAGE_FULL, {"message": str(exc)[:500]})
            if release(session, self.claim, reason=STORAGE_FULL):
                return STORAGE_FULL
        return None

    def _input_resolver(self, inputs_dir: Path) -> Resolve:
        """Artifact id -> local file, for the inputs the API resolved when it created the job
        (the local store's blob read in place; a remote store's through this host's cache,
        linked into `inputs_dir`). A deleted input fails the job naming its location."""
        with self.ctx.sessions() as session:
            rows = session.execute(
                select(JobArtifact.role, Artifact.id, Artifact.sha256, Artifact.deleted_at)
                .join(Artifact, Artifact.id == JobArtifact.artifact_id)
                .where(JobArtifact.job_id == self.claim.job_id)).all()
        paths = {}
        for row in rows:
            path = None if row.deleted_at is not None else self._retrying(
                self.ctx.store.fetch, row.sha256, inputs_dir)
            if path is None:
                raise InvalidInput(f"{row.role}: artifact {row.id!r} is gone", code="artifact_not_found",
                                   field=row.role, artifact=row.id)
            paths[row.id] = path

        def resolve(ref: str) -> Path:
            if ref not in paths:
                raise InvalidInput(f"artifact {ref!r} is not an input of this job", code="artifact_not_found",
                                   artifact=ref)
            return paths[ref]

        return resolve

    def _retrying(self, operation: Callable[..., T], *args: Any) -> T:
        """`operation(*args)`, retried while the store is unavailable, for up to
        TRAJX_STORAGE_RETRY_SECONDS; then StorageUnavailable (the job goes back to recovery)."""
        deadline = time.monotonic() + self.ctx.settings.storage_retry_seconds
        pause = STORAGE_RETRY_FIRST_PAUSE
        while True:
            try:
                return operation(*args)
            except StorageUnavailable as exc:
                if time.monotonic() + pause > deadline or self.shutdown.is_set():
                    raise
                log.warning("job %s: %s; retrying in %.1f s", self.claim.job_id, exc.message, pause)
                time.sleep(pause)
                pause = min(2 * pause, STORAGE_RETRY_MAX_PAUSE)

    def _on_progress(self, progress: RunProgress) -> None:
        self._unreported.append(progress.data)
        self._latest = progress
        if time.monotonic() - self._last_progress < PROGRESS_MIN_INTERVAL and progress.done < progress.total:
            return
        self._report_progress(progress)

    def _report_progress(self, progress: RunProgress) -> None:
        step, total = progress.done, progress.total
        self._last_progress = time.monotonic()
        latest = {"step": step, "total": total, **progress.data}
        with self.ctx.sessions() as session:
            if not heartbeat(session, self.claim, progress_step=step, progress_total=total):
                self.lost.set()
                return
            # Every step since the previous event rides along, so per-step charts miss none.
            add_event(session, self.claim.job_id, "progress", {**latest, "steps": self._unreported})
            self._commit_with_webhook(session, PROGRESS, {"id": self.claim.job_id, "status": "running", **latest})
        self._unreported = []

    def _on_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self.ctx.sessions() as session:
            if not record_step(session, self.claim, checkpoint.step, checkpoint.state, checkpoint.data):
                self.lost.set()
                return
        if self._unreported:  # what the job shows is never behind what it would resume from
            self._report_progress(self._latest)

    def _offer_partial(self, write: Callable[[], ResultManifest]) -> None:
        self.partial = write

    def _should_cancel(self) -> bool:
        if self.lost.is_set() or self.shutdown.is_set() or time.monotonic() >= self.deadline:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check < CANCEL_CHECK_INTERVAL:
            return False
        self._last_cancel_check = now
        with self.ctx.sessions() as session:
            return cancel_requested(session, self.claim)

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        # A long engine step must not look like a dead worker.
        while not stop.wait(self.ctx.settings.heartbeat_seconds):
            try:
                with self.ctx.sessions() as session:
                    if not heartbeat(session, self.claim):
                        self.lost.set()
                        return
            except Exception:
                log.exception("job %s: heartbeat failed, retrying", self.claim.job_id)

    def _store_and_finish(self, out_dir: Path, manifest: ResultManifest, status: str, values: dict[str, Any],
                          event_data: dict[str, Any] | None = None) -> str | None:
        """End the job `status` with `manifest`'s files as its result, in one commit."""
        # No lock (see app.core.storage.store): the result files stay in `out_dir` until
        # their rows have committed, and are published again if a concurrent delete of an
        # artifact with the same bytes took the blob meanwhile. They are published before
        # any row is written, so a slow or retried store holds no database lock.
        new_blobs: list[str] = []
        try:
            for entry in manifest.files:
                if self._retrying(self.ctx.store.publish, out_dir / entry.path, entry.sha256, entry.size):
                    new_blobs.append(entry.sha256)
        except BaseException:
            with self.ctx.sessions() as session:
                self._drop_blobs(session, new_blobs)
            raise
        with self.ctx.sessions() as session:
            try:
                result = self._store_results(session, out_dir, manifest)
                ended = self._finish(session, status, {**values, "result": result, "summary": manifest.summary},
                                     event_data)
            except BaseException:
                session.rollback()
                self._drop_blobs(session, new_blobs)
                raise
            if ended != status:  # a late cancel, or a lost claim: the rows were rolled back
                self._drop_blobs(session, new_blobs)
                return ended
        for entry in manifest.files:
            self._retrying(self.ctx.store.ensure, out_dir / entry.path, entry.sha256)
        return ended

    def _end(self, out_dir: Path, status: str, values: dict[str, Any],
             event_data: dict[str, Any] | None = None) -> str | None:
        """End the job `status` (cancelled or failed), keeping the steps it reached as partial
        results when the executor offered them and the tenant's quota has room."""
        manifest = self._partial_results(out_dir)
        if manifest is not None:
            try:
                return self._store_and_finish(out_dir, manifest, status, values,
                                              {**(event_data or {}), "partial": True})
            except Exception as exc:
                if is_unavailable(exc):
                    raise
                log.exception("job %s: its partial results could not be stored", self.claim.job_id)
        with self.ctx.sessions() as session:
            return self._finish(session, status, values, event_data)

    def _partial_results(self, out_dir: Path) -> ResultManifest | None:
        if self.partial is None:
            return None
        try:
            manifest = self.partial()
        except Exception:
            log.exception("job %s: its partial results could not be written", self.claim.job_id)
            return None
        with self.ctx.sessions() as session:
            try:
                check_stored_bytes(session, self.tenant_id, self.ctx.settings.tenant_max_stored_bytes,
                                   sum(f.size for f in manifest.files))
            except QuotaExceeded as exc:
                add_event(session, self.claim.job_id, "partial_dropped", {"reason": exc.message})
                session.commit()
                return None
            finally:
                session.rollback()
        return manifest

    def _store_results(self, session: Session, out_dir: Path, manifest: ResultManifest) -> dict[str, Any]:
        """Every file of the manifest becomes an artifact of the tenant; returns `job.result`:
        the manifest's files, each with its `artifact` id."""
        files = []
        for entry in manifest.files:
            artifact = record_result(session, self.tenant_id, out_dir, entry, self.claim.job_id, self.ctx.settings)
            files.append({**asdict(entry), "artifact": artifact.id})
        return {"files": files}

    def _drop_blobs(self, session: Session, hashes: list[str]) -> None:
        """Delete blobs this job brought into the store whose rows did not commit, unless a
        live artifact uses the same bytes."""
        for sha256 in hashes:
            try:
                drop_blob_if_unused(session, self.ctx.store, sha256)
            except Exception:  # the database or store is away: an unreferenced blob only costs space
                log.warning("job %s: could not remove blob %s", self.claim.job_id, sha256, exc_info=True)

    def _fail(self, out_dir: Path, code: str, message: str, details: dict[str, Any] | None = None) -> str | None:
        return self._end(out_dir, "failed", {"error_code": code, "error_message": message},
                         {"code": code, "message": message, **({"details": details} if details else {})})

    def _finish(self, session: Session, status: str, values: dict[str, Any],
                event_data: dict[str, Any] | None = None) -> str | None:
        """Write the final state, plus whatever `session` already holds, in one commit.

        Returns the status the job really ended with, or None if the claim was lost and
        nothing was written. A cancel requested meanwhile wins, even after the engine
        finished: then the results `session` holds are rolled back.
        """
        ended = finish(session, self.claim, status, **values)
        if ended is not None and ended != status:
            session.rollback()
            ended = finish(session, self.claim, "cancelled")
        if ended is None:
            session.rollback()
            log.warning("job %s: claim lost before finishing", self.claim.job_id)
            return None
        add_event(session, self.claim.job_id, ended, event_data if ended == status else {})
        self._commit_with_webhook(session, f"job.{ended}")
        return ended

    def _commit_with_webhook(self, session: Session, event: str, data: dict[str, Any] | None = None) -> None:
        """Commit `session` with webhook message `event` (if the job wants it) in the outbox."""
        queued = self.webhooks is not None and enqueue(session, self.claim.job_id, event, data)
        session.commit()
        if queued:
            self.webhooks.wake()
