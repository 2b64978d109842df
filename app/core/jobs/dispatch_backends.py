"""Dispatcher implementations (see `app.core.jobs.dispatcher`): hand a committed job id to a worker.

`CeleryDispatcher` publishes the task `trajx.run_job(job_id)` by name to the job's queue
in Redis; `EmbeddedDispatcher` wakes a local `python -m worker.embedded` subprocess.
Neither imports the worker's code (nor torch), so the API process can use both.
"""

import logging
import os
import subprocess
import sys
import threading
import time
from functools import lru_cache

import redis
from kombu.exceptions import OperationalError

from app.core.celery_config import RUN_JOB_TASK, celery_config, create_celery
from app.core.settings import Settings

log = logging.getLogger(__name__)

DISPATCH_MARKER = "trajx:dispatched:{job_id}"
# How often the API process checks that its embedded worker is alive.
WATCHDOG_SECONDS = 5.0


class CeleryDispatcher:
    """Publishes the job id to the job's queue, then marks it dispatched in Redis.

    The marker (`DispatchMarkers`) lives in the broker's Redis, so a Redis restart that
    loses the queued message loses the marker too: recovery re-dispatches exactly those
    jobs. It is set after the send: a crash between the two leaves a message without a
    marker (a harmless duplicate later), never a marker without a message.
    """

    def __init__(self, settings: Settings) -> None:
        self._celery = create_celery(settings)
        self._markers = dispatch_markers(settings)

    def start(self) -> None:
        return None  # connections open on first send

    def stop(self) -> None:
        return None

    def dispatch(self, job_id: str, queue: str) -> None:
        """Send the job to `queue`; on a broker failure log it (recovery re-sends)."""
        try:
            self._celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
            self._markers.touch(job_id)
        except (redis.RedisError, OperationalError, OSError) as exc:
            log.warning("job %s: broker unavailable (%s); recovery will re-dispatch it", job_id, exc)

    def marked_at(self, job_id: str) -> float | None:
        """When a message for the job was last sent or seen alive (None: no message known)."""
        return self._markers.touched_at(job_id)


class DispatchMarkers:
    """One key per job in the broker's Redis: the time a message for it was last sent, or
    seen alive by a worker that put it back (a retry), until a worker is done with it.

    Recovery believes a marker only while it is fresh (`worker.recovery`): one that a
    crash or a lost message left behind stops hiding its job after a while.
    """

    def __init__(self, broker_url: str, ttl_seconds: int) -> None:
        self._redis = redis.Redis.from_url(broker_url, socket_timeout=5)  # connects lazily
        self._ttl = ttl_seconds

    def touch(self, job_id: str) -> None:
        self._redis.set(DISPATCH_MARKER.format(job_id=job_id), repr(time.time()), ex=self._ttl)

    def forget(self, job_id: str) -> None:
        self._redis.delete(DISPATCH_MARKER.format(job_id=job_id))

    def touched_at(self, job_id: str) -> float | None:
        value = self._redis.get(DISPATCH_MARKER.format(job_id=job_id))
        try:
            return float(value) if value is not None else None
        except ValueError:
            return 0.0  # a marker of an older release: no time, so long stale


def dispatch_markers(settings: Settings) -> DispatchMarkers:
    """The markers of `settings.broker_url` (one client per process)."""
    ttl = celery_config(settings)["broker_transport_options"]["visibility_timeout"]
    return _markers(settings.broker_url, ttl)


@lru_cache(maxsize=4)
def _markers(broker_url: str, ttl_seconds: int) -> DispatchMarkers:
    return DispatchMarkers(broker_url, ttl_seconds)


def message_consumed(settings: Settings, job_id: str) -> None:
    """A worker is done with a message for the job (ran it, or found nothing to claim): drop
    the job's marker, so a job still queued is re-sent by recovery at once."""
    _update_marker(settings, job_id, DispatchMarkers.forget)


def message_retried(settings: Settings, job_id: str) -> None:
    """A worker put a message for the job back in the broker (to retry it later): it is
    alive, so recovery need not send another while it keeps coming back."""
    _update_marker(settings, job_id, DispatchMarkers.touch)


def _update_marker(settings: Settings, job_id: str, update) -> None:
    try:
        update(dispatch_markers(settings), job_id)
    except redis.RedisError as exc:
        log.warning("job %s: could not update its dispatched marker (%s); recovery re-sends it later",
                    job_id, exc)


class EmbeddedRunner:
    """The `python -m worker.embedded` child of this process, started on demand.

    The child polls the database itself; a line on its stdin only wakes it early
    (written without blocking: a busy child's full pipe just means it polls).
    Closing its stdin (this process exiting) stops it after its current job. A
    watchdog thread restarts a child that died, so queued jobs do not wait for a wake-up.
    """

    def __init__(self, settings: Settings, watchdog_seconds: float = WATCHDOG_SECONDS) -> None:
        self._settings = settings
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._watchdog_seconds = watchdog_seconds
        self._watchdog: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def start(self) -> None:
        """Start the child if it is not running, and its watchdog (idempotent)."""
        with self._lock:
            self._spawn_if_dead()
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(target=self._watch, name="embedded-watchdog", daemon=True)
                self._watchdog.start()

    def _spawn_if_dead(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        if self._process is not None:
            log.warning("embedded worker exited with %s; restarting it", self._process.returncode)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "worker.embedded", "--parent-pipe", "--parent-pid", str(os.getpid())],
            stdin=subprocess.PIPE, env={**os.environ, **settings_env(self._settings)},
        )
        os.set_blocking(self._process.stdin.fileno(), False)

    def _watch(self) -> None:
        while True:
            time.sleep(self._watchdog_seconds)
            with self._lock:
                if self._process is None:  # stopped
                    return
                self._spawn_if_dead()

    def wake(self, job_id: str) -> None:
        """Tell the child a job is waiting (restarting it if it died)."""
        self.start()
        with self._lock:
            try:
                os.write(self._process.stdin.fileno(), f"{job_id}\n".encode())
            except BlockingIOError:
                pass  # the child is busy and has wake-ups enough; it polls the database next
            except (BrokenPipeError, ValueError):
                log.warning("embedded worker gone; its watchdog restarts it")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the child to hand its running job back to the queue and exit; kill it after `timeout`."""
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        process.stdin.close()
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_runners: dict[str, EmbeddedRunner] = {}
_runners_lock = threading.Lock()


def embedded_runner(settings: Settings) -> EmbeddedRunner:
    """The one embedded runner of this process for `settings.database_url`."""
    with _runners_lock:
        return _runners.setdefault(settings.database_url, EmbeddedRunner(settings))


class EmbeddedDispatcher:
    """Runs jobs in a local subprocess worker: no Redis, and no torch in the API process.

    The worker starts with `start` (after migrations), so jobs an earlier run left
    queued or running are picked up without waiting for a new one; `stop` hands its
    running job back to the queue.
    """

    def __init__(self, settings: Settings) -> None:
        self._runner = embedded_runner(settings)

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()

    def dispatch(self, job_id: str, queue: str) -> None:
        self._runner.wake(job_id)  # one local worker serves every queue

    def marked_at(self, job_id: str) -> float | None:
        # The embedded worker finds every claimable job in the database by itself.
        return time.time()


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as TRAJX_* environment variables, so a child process sees the same ones."""
    return {f"TRAJX_{name.upper()}": str(value) for name, value in settings.model_dump().items()
            if value is not None}
