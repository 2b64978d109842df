"""The seam between the API and job execution: `Dispatcher.dispatch(job_id)`.

The API calls `dispatch` after the job row commits; it carries only the id, the
database holds the job. Implementations other than `NullDispatcher` live in
`worker.dispatchers` and are imported by name only when selected, so the API
process loads neither Celery's worker side nor torch unless it must.
"""

import importlib
from typing import Protocol

from app.settings import Settings


class Dispatcher(Protocol):
    def dispatch(self, job_id: str) -> None:
        """Hand a committed, queued job to whatever runs jobs. Must not block on the job."""
        ...


class NullDispatcher:
    """Runs nothing: jobs stay queued (tests, and an API-only process beside a recovery sweep)."""

    def dispatch(self, job_id: str) -> None:
        return None


# settings.dispatcher -> "module:factory"; each factory takes the Settings.
_IMPLEMENTATIONS = {
    "embedded": "worker.dispatchers:EmbeddedDispatcher",
    "celery": "worker.dispatchers:CeleryDispatcher",
}


def get_dispatcher(settings: Settings) -> Dispatcher:
    """The dispatcher `settings.dispatcher` names; ImportError names the missing module."""
    if settings.dispatcher == "none":
        return NullDispatcher()
    module_name, factory_name = _IMPLEMENTATIONS[settings.dispatcher].split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(settings)
