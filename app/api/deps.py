"""Request dependencies as `Annotated` aliases: the process's services and the caller's tenant.

Per-process objects (engine, database runner, store, dispatcher, key cache) live in
`app.state.services`, built once by `app.main.create_app`.

Endpoints are `async` and do their blocking ORM work through `Database.run`, one
thread-pool hop per request: sync endpoints and sync dependencies would each cost a
hop of their own (FastAPI also validates a sync endpoint's response in the pool), and
on a busy 2-core machine those hops are what turns into tail latency.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Concatenate, ParamSpec, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.api.problems import ProblemError
from app.core.jobs.dispatcher import Dispatcher
from app.core.persistence.outage import is_dropped_connection
from app.core.settings import Settings
from app.core.storage.store import ArtifactStore
from app.core.tenancy.auth import KeyCache, authenticate

log = logging.getLogger("app.api.deps")
_COMMITTED = "trajx.committed"  # a `Session.info` key: the session attempted a commit
P = ParamSpec("P")
T = TypeVar("T")


class Database:
    """Runs `work(session, *args)` in the thread pool with a fresh session, closed after.

    `run` runs the work again, on a fresh connection, when its pooled connection turns out
    dead before the work committed anything (a database restart or a terminated backend):
    the transaction died with the connection, so nothing happened yet. Work that changes
    something outside the database first (the store) uses `run_once`.
    """

    ATTEMPTS = 3

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        event.listen(sessions, "before_commit", _note_commit)

    async def run(self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await run_in_threadpool(self._call, self.ATTEMPTS, work, *args, **kwargs)

    async def run_once(self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await run_in_threadpool(self._call, 1, work, *args, **kwargs)

    def _call(self, attempts: int, work: Callable[..., T], *args, **kwargs) -> T:
        while True:
            attempts -= 1
            with self._session() as session:
                try:
                    return work(session, *args, **kwargs)
                except DBAPIError as exc:
                    if not attempts or _COMMITTED in session.info or not is_dropped_connection(exc):
                        raise
                    log.warning("database connection dropped (%s); running the request again",
                                str(exc.orig).splitlines()[0])

    @contextmanager
    def _session(self) -> Iterator[Session]:
        session = self.sessions()
        try:
            yield session
        finally:
            try:
                session.close()
            except DBAPIError as exc:
                # The connection died after the work ended: its transaction went with it,
                # there is nothing left to roll back, and the work's outcome stands.
                if not is_dropped_connection(exc):
                    raise


def _note_commit(session: Session) -> None:
    session.info[_COMMITTED] = True


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    db: Database
    store: ArtifactStore
    dispatcher: Dispatcher
    keys: KeyCache


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer trx_...` (an API key)")


async def get_tenant_id(services: ServicesDep,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The tenant of the presented API key; 401 problem if absent, unknown or revoked."""
    if credentials is None:
        raise ProblemError(401, "unauthorized", "missing `Authorization: Bearer <api key>` header",
                           headers={"WWW-Authenticate": "Bearer"})
    key = credentials.credentials
    tenant_id = services.keys.get(key)
    if tenant_id is None:
        tenant_id = await services.db.run(_tenant_of_key, key)
        services.keys.put(key, tenant_id)
    return tenant_id


def _tenant_of_key(session: Session, key: str) -> str:
    row = authenticate(session, key)
    if row is None:
        raise ProblemError(401, "unauthorized", "invalid or revoked API key",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return row.tenant_id


TenantId = Annotated[str, Depends(get_tenant_id)]
