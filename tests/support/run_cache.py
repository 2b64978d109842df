"""Expensive test inputs built once per test run and shared by every pytest-xdist worker.

`cached_dir(root, name, build)` returns `root/name`: the first worker to ask builds it
(under an exclusive lock, into a partial folder renamed when complete); the others wait
for the lock and reuse it. `root` is the run's shared temp folder (`run_cache` fixture).
"""

import fcntl
import shutil
from collections.abc import Callable
from pathlib import Path


def cached_dir(root: Path, name: str, build: Callable[[Path], object]) -> Path:
    target = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            partial = root / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            build(partial)
            partial.rename(target)
    return target
