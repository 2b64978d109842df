"""The embedded worker: `python -m worker.embedded` claims and runs jobs from the database.

The embedded default (`trajx serve`, SQLite, no Redis) starts it as a child of the
API process, which stays free of torch. It runs one job at a time through the same
`run_job` the Celery task calls; between jobs it sweeps for claimable work (queued
jobs, and running ones whose worker died), so recovery needs no separate process.
A file lock keeps a second embedded worker on the same data directory idle.
"""

import argparse
import fcntl
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.core.jobs.claim import claimable_job_ids, fail_exhausted
from app.core.jobs.fair_share import DEFERRED, fair_order
from app.core.logs import configure_logging
from app.core.settings import Settings, get_settings
from app.core.storage.temp_files import PeriodicSweep
from worker.context import worker_context
from worker.lost_jobs import expire_lost_jobs
from worker.threads import threads_per_job, use_threads
from worker.webhooks import deliverer

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
MAX_ERROR_BACKOFF_SECONDS = 30.0
LOCK_RETRY_SECONDS = 0.5
PARENT_CHECK_SECONDS = 0.5
STORAGE_FULL_RETRY_SECONDS = 30.0


@contextmanager
def exclusive(lock_path: Path, shutdown: threading.Event) -> Iterator[bool]:
    """Hold an exclusive lock on `lock_path`, waiting for an earlier holder to exit.

    Yields False (without the lock) if `shutdown` is set while waiting.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock_file:
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if shutdown.wait(LOCK_RETRY_SECONDS):
                    yield False
                    return
        yield True


def run_pending(settings: Settings, shutdown: threading.Event) -> int:
    """Run the next claimable job in fair order (`app.core.jobs.fair_share`); returns 1 if one ran, else 0.

    One job per call: the next call orders the queue again, so a tenant's backlog cannot
    hold back a job another tenant submitted meanwhile.
    """
    from worker.runner import STORAGE_FULL, run_job  # torch loads here, never in the API process

    use_threads(threads_per_job(settings.worker_threads))  # one job at a time: all its cores
    ctx = worker_context(settings)
    with ctx.sessions() as session:
        expire_lost_jobs(session, settings)  # e.g. the job of the worker this one replaced
        fail_exhausted(session, settings.stale_seconds)
        job_ids = fair_order(session, claimable_job_ids(session, settings.stale_seconds),
                             settings.tenant_max_running_jobs)
    for job_id in job_ids:
        if shutdown.is_set():
            break
        status = run_job(job_id, settings, shutdown)
        if status == STORAGE_FULL:
            # Every job would meet the full store at its next write: wait, then try again.
            shutdown.wait(STORAGE_FULL_RETRY_SECONDS)
            return 0
        if status not in (None, DEFERRED):
            return 1
    return 0


def _wait_for_wake(fd: int | None, timeout: float) -> bool:
    """Wait up to `timeout` for a wake-up line on `fd`; False once the parent closed it."""
    if fd is None:
        select.select([], [], [], timeout)
        return True
    readable, _, _ = select.select([fd], [], [], timeout)
    return not readable or os.read(fd, 65536) != b""


def watch_parent(parent_pid: int, shutdown: threading.Event, interval: float = PARENT_CHECK_SECONDS) -> None:
    """Set `shutdown` once process `parent_pid` is no longer this process's parent.

    A parent killed with SIGKILL tells nobody: this process is re-parented, which a
    thread notices within `interval`, whatever the main thread is doing (a job, the
    lock wait). (PR_SET_PDEATHSIG would not do: it fires when the parent *thread* that
    started this process ends, and the API starts it from short-lived pool threads.)
    """
    def watch() -> None:
        while not shutdown.wait(interval):
            if os.getppid() != parent_pid:
                log.warning("embedded worker: parent %d is gone; handing back the job and stopping", parent_pid)
                shutdown.set()

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def serve(settings: Settings, parent_fd: int | None, parent_pid: int | None = None) -> None:
    """Run jobs until the parent closes `parent_fd` (forever when it is None), SIGTERM, or
    process `parent_pid` (if given) dies.

    On SIGTERM/SIGINT, or the parent's death, the running job goes back to the queue at its
    next step check, so the next start resumes it at once instead of waiting for its
    heartbeat to go stale. A database error (locked, restarting) is logged and retried with
    backoff; the job it interrupted keeps a stale heartbeat and is run again.
    """
    shutdown = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: shutdown.set())
    if parent_pid is not None:
        watch_parent(parent_pid, shutdown)
    with exclusive(settings.data_dir / "embedded-worker.lock", shutdown) as locked:
        if not locked:
            return
        log.info("embedded worker %d running jobs from %s", os.getpid(), settings.database_url)
        deliverer(settings)  # webhooks of jobs finished anywhere, the API's cancels too
        temp_files = PeriodicSweep(worker_context(settings).store.tmp_dir)  # what crashed jobs left
        failures = 0
        while not shutdown.is_set():
            wait = POLL_SECONDS
            temp_files.maybe_sweep()
            try:
                while run_pending(settings, shutdown):
                    pass
                failures = 0
            except Exception:
                failures += 1
                wait = min(POLL_SECONDS * 2 ** failures, MAX_ERROR_BACKOFF_SECONDS)
                log.exception("embedded worker: running jobs failed; retrying in %g s", wait)
            if not _wait_for_wake(parent_fd, wait):
                return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.embedded", description=__doc__.splitlines()[0])
    parser.add_argument("--parent-pipe", action="store_true",
                        help="stop when stdin closes (set by the API process that started it)")
    parser.add_argument("--parent-pid", type=int,
                        help="stop when this process (the API that started it) dies, even by SIGKILL")
    args = parser.parse_args(argv)
    configure_logging(get_settings().log_level)  # the same JSON lines as the API
    serve(get_settings(), sys.stdin.fileno() if args.parent_pipe else None, args.parent_pid)


if __name__ == "__main__":
    main()
