"""Operations endpoints: `/healthz` (process up), `/readyz` (database and store), `/metrics`."""

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.api.deps import ServicesDep
from app.api.problems import ProblemError, database_unavailable
from app.api.responses import problem_responses
from app.api.schemas import Health, Readiness
from app.core.storage.errors import StorageUnavailable

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
def readyz(services: ServicesDep) -> Readiness:
    """The database answers a query and the artifact store accepts files with at least
    TRAJX_STORAGE_MIN_FREE_BYTES free (else 503 `database_unavailable`,
    `storage_unavailable` (both with `Retry-After`) or `storage_full`)."""
    try:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise database_unavailable(f"database check failed: {type(exc).__name__}") from None
    try:
        services.store.check_ready()
    except StorageUnavailable as exc:
        raise ProblemError(503, exc.code, exc.message, headers={"Retry-After": str(exc.retry_after)}) from None
    free = services.store.free_bytes()
    minimum = services.settings.storage_min_free_bytes
    if free is not None and free < minimum:
        raise ProblemError(503, "storage_full", f"the artifact store has {free} bytes free, "
                                                f"below TRAJX_STORAGE_MIN_FREE_BYTES={minimum}")
    return Readiness(status="ready", database="ok", storage="ok", storage_free_bytes=free)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
                       **problem_responses(401)})
def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus metrics: requests and latency, jobs by status, bytes stored.

    With TRAJX_METRICS_TOKEN set, only `Authorization: Bearer <that token>` gets them.
    """
    token = services.settings.metrics_token
    presented = request.headers.get("authorization", "").encode("latin-1")
    if token is not None and not hmac.compare_digest(presented, f"Bearer {token}".encode()):
        raise ProblemError(401, "unauthorized", "`/metrics` needs `Authorization: Bearer <TRAJX_METRICS_TOKEN>`",
                           headers={"WWW-Authenticate": "Bearer"})
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
