"""What a worker process needs to touch the outside world: sessions and the store.

Built lazily, once per process and database: a Celery child is forked from a parent
that must not hold open connections, so nothing here runs at import.
"""

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from app.core.persistence.db import make_engine, make_session_factory
from app.core.settings import Settings
from app.core.storage.store import ArtifactStore, open_store


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ArtifactStore


@lru_cache(maxsize=8)
def _connect(database_url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(database_url))


@lru_cache(maxsize=8)
def _store(settings_json: str) -> ArtifactStore:
    # One client (S3: a connection pool) per process and configuration.
    return open_store(Settings.model_validate_json(settings_json))


def worker_context(settings: Settings) -> WorkerContext:
    """Sessions for `settings.database_url` (one engine per process) and its artifact store."""
    return WorkerContext(settings, _connect(settings.database_url), _store(settings.model_dump_json()))
