"""The store's `tmp/` directory: what is in use is locked, what a crash left behind is swept.

Partial uploads and job work directories live in `<store>/tmp/`. Whoever writes one
holds an exclusive flock on it for as long as it uses it; a process killed mid-way
leaves its entry unlocked (the kernel drops the lock with the process), and
`sweep_stale` removes exactly such entries (by age and owner liveness). The API sweeps at
start-up and then every TRAJX_TEMP_SWEEP_SECONDS while it runs; the embedded worker,
Celery workers and the recovery loop sweep their host's directory periodically too.
No torch here.
"""

import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# An entry is locked right after it is created; younger ones are left alone, so that the
# moment in between never looks abandoned.
MIN_AGE_SECONDS = 10.0
# How often the long-running processes sweep.
SWEEP_INTERVAL_SECONDS = 600.0


def hold(path: Path) -> int:
    """Lock `path` (a file or a directory) exclusively; returns the descriptor whose closing releases it."""
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@contextmanager
def work_dir(tmp_dir: Path, prefix: str) -> Iterator[Path]:
    """A new directory in `tmp_dir`, held (see `hold`) while the block runs, then removed."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_dir))
    fd = hold(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


@dataclass(frozen=True)
class Swept:
    entries: int
    bytes: int


def sweep_stale(tmp_dir: Path, min_age_seconds: float = MIN_AGE_SECONDS) -> Swept:
    """Remove every entry of `tmp_dir` older than `min_age_seconds` that nobody holds."""
    removed = Swept(0, 0)
    cutoff = time.time() - min_age_seconds
    for entry in tmp_dir.iterdir() if tmp_dir.is_dir() else ():
        try:
            if entry.lstat().st_mtime > cutoff:
                continue
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone meanwhile, or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live upload or job holds it
        try:
            size = _size(entry)
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed = Swept(removed.entries + 1, removed.bytes + size)
        finally:
            os.close(fd)
    if removed.entries:
        log.warning("removed %d abandoned temporary entries (%d bytes) from %s", removed.entries,
                    removed.bytes, tmp_dir)
    return removed


def _size(entry: Path) -> int:
    if not entry.is_dir():
        return entry.stat().st_size
    return sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())


class PeriodicSweep:
    """Sweeps `tmp_dir` (and calls `also`, e.g. the store's own `sweep`) every `interval` seconds:
    `maybe_sweep()` from a caller's loop, or `start()` a thread of its own."""

    def __init__(self, tmp_dir: Path, interval: float = SWEEP_INTERVAL_SECONDS,
                 also: Callable[[], None] | None = None) -> None:
        self.tmp_dir = tmp_dir
        self.interval = interval
        self.also = also
        self._next = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def maybe_sweep(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.interval
        for what, sweep in ((self.tmp_dir, lambda: sweep_stale(self.tmp_dir)), ("the store", self.also)):
            if sweep is None:
                continue
            try:
                sweep()
            except Exception:  # a disk or an object store that is away: next round
                log.exception("sweeping %s failed; trying again in %g s", what, self.interval)

    def start(self) -> None:
        """Sweep `tmp_dir` now (what a killed predecessor left), then keep sweeping in a thread."""
        sweep_stale(self.tmp_dir)
        self._thread = threading.Thread(target=self._loop, name="temp-sweep", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self.maybe_sweep()
            if self._stop.wait(max(0.0, self._next - time.monotonic())):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
