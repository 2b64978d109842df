"""How many torch intra-op threads a worker's jobs use.

Jobs that run at once on one machine must not each start a thread per core: OpenMP
threads that outnumber the cores spin against each other, and a light job (Naive) can
then take longer than a heavy one. A worker process owns the cores of its CPU affinity,
shared evenly by the jobs it runs at once (Celery's concurrency; one for the embedded
worker); `TRAJX_WORKER_THREADS` sets the count per job instead.
"""

import os


def cores_owned() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_job(configured: int | None, concurrent_jobs: int = 1) -> int:
    """`configured`, or the cores owned shared by `concurrent_jobs` (at least one each)."""
    if configured is not None:
        return configured
    return max(1, cores_owned() // max(1, concurrent_jobs))


def use_threads(threads: int) -> None:
    """Make `threads` torch's intra-op thread count in this process (its job work and its
    matching's parallel solves follow it)."""
    import torch  # only worker processes get here; the API process never imports torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
