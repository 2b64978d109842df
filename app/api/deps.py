"""Request dependencies as `Annotated` aliases: settings, session, store, dispatcher, tenant.

Per-process objects (engine, session factory, store, dispatcher) live in
`app.state.services`, built once by `app.main.create_app`.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.auth import KeyCache, authenticate
from app.dispatch import Dispatcher
from app.problems import ProblemError
from app.settings import Settings
from app.storage import ArtifactStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArtifactStore
    dispatcher: Dispatcher
    keys: KeyCache


# Dependencies are async where they do no blocking I/O: a sync dependency costs a
# thread-pool hop, and hops are what a busy 2-core box turns into latency.
async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[Session]:
    """A session for the (sync, thread-pool) endpoint; creating one does no I/O, closing does."""
    session = services.sessions()
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


SessionDep = Annotated[Session, Depends(get_session)]
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
        tenant_id = await run_in_threadpool(_authenticate, services, key)
        services.keys.put(key, tenant_id)
    return tenant_id


def _authenticate(services: Services, key: str) -> str:
    with services.sessions() as session:
        row = authenticate(session, key)
        if row is None:
            raise ProblemError(401, "unauthorized", "invalid or revoked API key",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return row.tenant_id


TenantId = Annotated[str, Depends(get_tenant_id)]
