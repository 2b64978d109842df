"""The seam between job creation and job execution: `Dispatcher.dispatch(job_id, queue)`.

The API calls `dispatch` after the job row commits, with the queue chosen when the job
was created (`jobs.queue`); the message carries only the id, the database holds the
job. `start` runs once the database is migrated (the embedded dispatcher starts its
worker process then), `stop` when the process shuts down. The implementations other
than `NullDispatcher` live in `app.core.jobs.dispatch_backends`, imported only when selected, so
an API process loads Celery and Redis only if it sends through them.
"""

from typing import Protocol

from app.core.settings import Settings


class Dispatcher(Protocol):
    def start(self) -> None:
        """Begin work that needs a migrated database (idempotent)."""
        ...

    def dispatch(self, job_id: str, queue: str) -> None:
        """Hand a committed, queued job to whatever runs jobs. Must not block on the job."""
        ...

    def marked_at(self, job_id: str) -> float | None:
        """When a message for the job was last sent or seen alive (None: none known);
        recovery re-sends a queued job whose message went quiet."""
        ...

    def stop(self) -> None:
        """Release what `start` began."""
        ...


class NullDispatcher:
    """Runs nothing: jobs stay queued (tests, and an API-only process beside a recovery sweep)."""

    def start(self) -> None:
        return None

    def dispatch(self, job_id: str, queue: str) -> None:
        return None

    def marked_at(self, job_id: str) -> float | None:
        return None

    def stop(self) -> None:
        return None


def get_dispatcher(settings: Settings) -> Dispatcher:
    """The dispatcher `settings.dispatcher` names (not started)."""
    if settings.dispatcher == "none":
        return NullDispatcher()
    from app.core.jobs import (
        dispatch_backends as dispatchers,  # Celery and Redis load only for a real dispatcher
    )

    factory = {"embedded": dispatchers.EmbeddedDispatcher, "celery": dispatchers.CeleryDispatcher}
    return factory[settings.dispatcher](settings)
