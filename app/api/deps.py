"""Request dependencies as `Annotated` aliases: settings, session, store, dispatcher, tenant.

Per-process objects (engine, session factory, store, dispatcher) live in
`app.state.services`, built once by `app.main.create_app`.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.auth import authenticate
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


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer trx_...` (an API key)")


def get_tenant_id(session: SessionDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The tenant of the presented API key; 401 problem if absent, unknown or revoked."""
    if credentials is None:
        raise ProblemError(401, "unauthorized", "missing `Authorization: Bearer <api key>` header",
                           headers={"WWW-Authenticate": "Bearer"})
    key = authenticate(session, credentials.credentials)
    if key is None:
        raise ProblemError(401, "unauthorized", "invalid or revoked API key",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return key.tenant_id


TenantId = Annotated[str, Depends(get_tenant_id)]
