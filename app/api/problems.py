"""problem+json (RFC 9457) errors: one exception type and the handlers that render it.

Every error body has `type`, `title`, `status`, `detail`, `code` and, where a field,
artifact or tensor is at fault, `errors: [{field|artifact|tensor, message}]`.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import Conflict, NotFound, QuotaExceeded, TooBusy
from app.core.persistence.outage import RETRY_AFTER_SECONDS, is_unavailable
from app.core.storage.errors import StorageFull, StorageUnavailable
from trajx.errors import TrajxError
from trajx.readable_errors import field_path

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://trajx.dev/problems/"
log = logging.getLogger("app.api.problems")


class ProblemDetail(BaseModel):
    """One offending thing, named by whichever of field, artifact and tensor apply."""

    field: str | None = None
    artifact: str | None = None
    tensor: str | None = None
    message: str


class Problem(BaseModel):
    """The body of every error response (`application/problem+json`)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[ProblemDetail] | None = None


class ProblemError(Exception):
    """Raise anywhere in a request to answer with problem+json."""

    def __init__(self, status: int, code: str, detail: str, *, title: str | None = None,
                 errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.title = title or code.replace("_", " ").capitalize()
        self.errors = errors
        self.headers = headers

    def response(self) -> JSONResponse:
        body = Problem(type=PROBLEM_TYPE_BASE + self.code, title=self.title, status=self.status,
                       detail=self.detail, code=self.code,
                       errors=[ProblemDetail(**e) for e in self.errors] if self.errors else None)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=self.status,
                            media_type=PROBLEM_MEDIA_TYPE, headers=self.headers)


# The domain's errors by HTTP status; any other TrajxError is a 422.
_STATUSES = ((NotFound, 404), (Conflict, 409), (QuotaExceeded, 403), (TooBusy, 429), (StorageFull, 507),
             (StorageUnavailable, 503))


def database_unavailable(detail: str = "the database is unavailable; try again shortly") -> ProblemError:
    """503 with `Retry-After`: the database is restarting, refusing or dropped the connection."""
    return ProblemError(503, "database_unavailable", detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def from_trajx_error(exc: TrajxError) -> ProblemError:
    """Map a TrajxError (code + details naming the culprit, or an `errors` list) onto a problem."""
    status = next((s for error_type, s in _STATUSES if isinstance(exc, error_type)), 422)
    errors = exc.details.get("errors")
    culprit = {k: str(v) for k, v in exc.details.items() if k in ("field", "artifact", "tensor")}
    if errors is None and culprit:
        errors = [{**culprit, "message": exc.message}]
    retry_after = exc.retry_after if isinstance(exc, TooBusy | StorageUnavailable) else None
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return ProblemError(status, exc.code, exc.message, errors=errors, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"field": field_path(err.get("loc", ())), "message": str(err.get("msg", "invalid")).removeprefix("Value error, ")}
            for err in exc.errors()]


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 408: "request_timeout", 413: "payload_too_large", 415: "unsupported_media_type",
               416: "range_not_satisfiable", 422: "validation_error"}


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error, including framework ones and crashes, as problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return ProblemError(422, "validation_error", "the request is not valid",
                            errors=_validation_errors(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return ProblemError(exc.status_code, code, str(exc.detail), headers=exc.headers).response()

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        # A safety net: input checks should refuse such values first, so log what slipped through.
        log.warning("the database refused a value on %s %s: %s: %s", request.method, request.url.path,
                    type(exc).__name__, exc.orig)
        return ProblemError(422, "invalid_value", "a value in the request cannot be stored").response()

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):
            return await _crash(request, exc)
        log.warning("database unavailable on %s %s: %s: %s", request.method, request.url.path,
                    type(exc).__name__, str(getattr(exc, "orig", None) or exc).splitlines()[0])
        return database_unavailable().response()

    @app.exception_handler(TrajxError)
    async def _trajx(_: Request, exc: TrajxError) -> JSONResponse:
        return from_trajx_error(exc).response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ProblemError(500, "internal_error", "internal server error").response()
