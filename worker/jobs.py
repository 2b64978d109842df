"""`run_job(job_id)`: the one job function every execution path calls.

Claim the job atomically, run the engine on the stored input artifacts with
progress, heartbeat and cancel callbacks, then store the result files as artifacts of
the job's tenant and finish the job in one transaction. Whatever happens, the job
ends `succeeded`, `failed` (with a stable code) or `cancelled`; on a clean shutdown it
goes back to `queued`; if this process dies, it stays `running` with a heartbeat that
goes stale so recovery runs it again.
"""

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts import blob_in_use, create_artifact_from_file
from app.db_outage import is_unavailable
from app.models import Artifact, Job
from app.outbox import PROGRESS, enqueue
from app.settings import Settings, get_settings
from app.temp_files import work_dir
from trajx.errors import Cancelled, InvalidInput, TrajxError, is_out_of_memory
from trajx.runner import RunProgress, execute
from trajx.spec import parse_job_spec
from worker.claim import Claim, add_event, cancel_requested, claim_job, finish, heartbeat, release
from worker.context import WorkerContext, worker_context
from worker.fair_share import DEFERRED
from worker.webhooks import deliverer

log = logging.getLogger(__name__)

# Progress rows are throttled: a fast job must not turn into a database benchmark.
PROGRESS_MIN_INTERVAL = 0.5
CANCEL_CHECK_INTERVAL = 0.25


def worker_id() -> str:
    """This process as the database knows it: `host:pid` (tests SIGKILL the pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
    with ctx.sessions() as session:
        claim = claim_job(session, job_id, worker_id(), ctx.settings.stale_seconds,
                          ctx.settings.tenant_max_running_jobs)
        if claim is None:
            # Still claimable but not claimed: only the tenant's running quota refuses that.
            waiting = session.scalar(select(Job.id).where(Job.id == job_id, Job.status == "queued",
                                                          Job.attempts < Job.max_attempts))
            session.rollback()
            return DEFERRED if waiting else None
    return _JobRun(ctx, claim, shutdown or threading.Event()).run()


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
        self.lost = threading.Event()
        self.deadline = time.monotonic() + ctx.settings.job_time_limit_seconds
        self._results_done = 0
        self._unreported: list[dict[str, Any]] = []  # (target, step, metrics) not in a progress event yet
        self._result_blobs: dict[str, Path] = {}  # sha256 -> the result file it came from
        self._last_progress = 0.0
        self._last_cancel_check = 0.0

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
        self._started()
        with work_dir(self.ctx.store.tmp_dir, prefix=f"{self.claim.job_id}-") as tmp:
            try:
                spec = parse_job_spec(self.spec_data)
                paths = self._input_paths(spec.artifact_refs())
                summary = execute(spec, resolve=paths.__getitem__, out_dir=Path(tmp),
                                  on_progress=self._on_progress, should_cancel=self._should_cancel)
                return self._succeed(Path(tmp), summary)
            except Cancelled:
                if self.lost.is_set():
                    log.warning("job %s: claim lost, another worker owns it now", self.claim.job_id)
                    return None
                if self.shutdown.is_set():
                    with self.ctx.sessions() as session:
                        if release(session, self.claim):
                            return "queued"
                if time.monotonic() >= self.deadline:
                    return self._fail("time_limit_exceeded",
                                      f"the job ran past {self.ctx.settings.job_time_limit_seconds:g} s")
                with self.ctx.sessions() as session:
                    return self._finish(session, "cancelled", {})
            except TrajxError as exc:
                # Details name tensors, shapes, fields: make them JSON whatever their type.
                return self._fail(exc.code, exc.message, json.loads(json.dumps(exc.details, default=str)))
            except Exception as exc:
                if is_unavailable(exc):
                    # Not the job's fault: it stays running, its heartbeat goes stale and
                    # recovery runs it again once the database is back.
                    raise
                if is_out_of_memory(exc):
                    return self._fail("out_of_memory", f"{type(exc).__name__}: {exc}")
                log.exception("job %s failed", self.claim.job_id)
                return self._fail("internal_error", f"{type(exc).__name__}: {exc}")

    def _input_paths(self, refs: dict[str, str]) -> dict[str, Path]:
        """Artifact id -> blob path in the store (read in place, never copied)."""
        with self.ctx.sessions() as session:
            rows = session.execute(
                select(Artifact.id, Artifact.sha256).where(
                    Artifact.id.in_(set(refs.values())), Artifact.tenant_id == self.tenant_id,
                    Artifact.deleted_at.is_(None))
            ).all()
        found = {row.id: self.ctx.store.path(row.sha256) for row in rows}
        for field, ref in refs.items():
            if ref not in found or not found[ref].is_file():
                raise InvalidInput(f"{field}: artifact {ref!r} is gone", code="artifact_not_found",
                                   field=field, artifact=ref)
        return found

    def _on_progress(self, progress: RunProgress) -> None:
        # The job's progress counts (target, step) results, whatever order the engine
        # produces them in: it reaches `total` exactly when the last one is done.
        self._results_done += 1
        step = self._results_done
        total = (len(self.spec_data.get("targets", [])) or 1) * progress.total
        self._unreported.append({"target": progress.target, "target_step": progress.step,
                                 "metrics": progress.metrics})
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_MIN_INTERVAL and step < total:
            return
        self._last_progress = now
        latest = {"step": step, "total": total, "target": progress.target,
                  "target_step": progress.step, "metrics": progress.metrics}
        with self.ctx.sessions() as session:
            if not heartbeat(session, self.claim, progress_step=step, progress_total=total):
                self.lost.set()
                return
            # Every step since the previous event rides along, so per-step charts miss none.
            add_event(session, self.claim.job_id, "progress", {**latest, "steps": self._unreported})
            self._commit_with_webhook(session, PROGRESS, {"id": self.claim.job_id, "status": "running", **latest})
        self._unreported = []

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

    def _succeed(self, out_dir: Path, summary: dict[str, Any]) -> str | None:
        with self.ctx.sessions() as session:
            try:
                result = self._store_results(session, out_dir)
            except BaseException:
                session.rollback()
                self._drop_result_blobs()
                raise
            ended = self._finish(session, "succeeded", {"result": result, "summary": summary})
        if ended == "succeeded":
            self._restore_result_blobs()
        return ended

    def _store_results(self, session: Session, out_dir: Path) -> dict[str, Any]:
        """Every result file becomes an artifact of the tenant; returns `job.result`."""
        def store(path: Path) -> str:
            name = "-".join(path.relative_to(out_dir).parts)
            artifact = create_artifact_from_file(session, self.tenant_id, path, name, self.claim.job_id,
                                                 store=self.ctx.store,
                                                 max_header_bytes=self.ctx.settings.max_header_bytes)
            self._result_blobs[artifact.sha256] = path
            return artifact.id

        targets = []
        for target_dir in sorted(out_dir.glob("target-*"), key=lambda p: int(p.name.split("-")[1])):
            files = {p.stem: store(p) for p in sorted(target_dir.glob("*.safetensors"))}
            targets.append({key: files.get(key) for key in ("last", "best", "permutations", "trajectory")})
        report = out_dir / "report.json"
        return {"targets": targets, "report": store(report) if report.exists() else None}

    def _fail(self, code: str, message: str, details: dict[str, Any] | None = None) -> str | None:
        with self.ctx.sessions() as session:
            return self._finish(session, "failed", {"error_code": code, "error_message": message},
                                {"code": code, "message": message, **({"details": details} if details else {})})

    def _finish(self, session: Session, status: str, values: dict[str, Any],
                event_data: dict[str, Any] | None = None) -> str | None:
        """Write the final state, plus whatever `session` already holds, in one commit.

        Returns the status the job really ended with, or None if the claim was lost and
        nothing was written. A cancel requested meanwhile wins, even after the engine
        finished: then the results `session` holds are rolled back and their blobs dropped.
        """
        ended = finish(session, self.claim, status, **values)
        if ended is not None and ended != status:
            session.rollback()
            self._drop_result_blobs()
            ended = finish(session, self.claim, "cancelled")
        if ended is None:
            session.rollback()
            self._drop_result_blobs()
            log.warning("job %s: claim lost before finishing", self.claim.job_id)
            return None
        add_event(session, self.claim.job_id, ended, event_data if ended == status else {})
        self._commit_with_webhook(session, f"job.{ended}")
        return ended

    def _drop_result_blobs(self) -> None:
        """Delete the blobs of result artifacts that were not committed, unless another
        artifact uses the same bytes (checked under the blob's lock, like a delete)."""
        blobs, self._result_blobs = self._result_blobs, {}
        for sha256 in blobs:
            with self.ctx.store.lock(sha256), self.ctx.sessions() as session:
                if not blob_in_use(session, sha256):
                    self.ctx.store.delete(sha256)

    def _restore_result_blobs(self) -> None:
        """Put back any committed result's bytes that vanished before the commit.

        Results are stored without holding their blobs' locks (several results can share
        one lock file), so a user deleting another artifact with identical bytes could
        remove the blob while our rows were still uncommitted. Now that the rows are
        visible to any delete, restoring under the lock closes that window.
        """
        blobs, self._result_blobs = self._result_blobs, {}
        for sha256, path in blobs.items():
            with self.ctx.store.lock(sha256):
                if not self.ctx.store.exists(sha256):
                    log.warning("job %s: result blob %s was removed before commit; restored",
                                self.claim.job_id, sha256)
                    self.ctx.store.put_file(path)

    def _started(self) -> None:
        data = {"attempt": self.claim.attempt, "worker_id": self.claim.worker_id}
        with self.ctx.sessions() as session:
            add_event(session, self.claim.job_id, "started", data)
            self._commit_with_webhook(session, "job.running", {"id": self.claim.job_id, "status": "running", **data})

    def _commit_with_webhook(self, session: Session, event: str, data: dict[str, Any] | None = None) -> None:
        """Commit `session` with webhook message `event` (if the job wants it) in the outbox."""
        queued = self.webhooks is not None and enqueue(session, self.claim.job_id, event, data)
        session.commit()
        if queued:
            self.webhooks.wake()
