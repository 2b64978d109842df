"""The service's domain errors, beside trajx.errors.InvalidInput (a 422 at the HTTP edge).

Raised by the core and the worker, turned into problem+json only by `app.api.problems`.
`details` name the culprit (`field`, `artifact`, `tensor`) or carry several as `errors`.
"""

from trajx.errors import TrajxError


def located_in(exc: TrajxError, prefix: str) -> TrajxError:
    """`exc` with its field names located in the request (`source[0]` -> `spec.source[0]`)."""
    def locate(field: str) -> str:
        return f"{prefix}.{field}".rstrip(".")

    if "field" in exc.details:
        exc.details["field"] = locate(exc.details["field"])
    for error in exc.details.get("errors") or []:
        if "field" in error:
            error["field"] = locate(error["field"])
    return exc


class NotFound(TrajxError):
    """No such resource for this tenant (another tenant's id is reported the same way)."""

    code = "not_found"

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"no {what} with id {ident!r}", code=f"{what}_not_found")


class Conflict(TrajxError):
    """The resource's state forbids the request now (a finished job, an artifact in use)."""

    code = "conflict"


class QuotaExceeded(TrajxError):
    """A tenant's limit would be passed (stored bytes): free something first."""

    code = "quota_exceeded"


class TooBusy(TrajxError):
    """A tenant's limit is reached for now (queued jobs): retry after `retry_after` seconds."""

    code = "too_busy"

    def __init__(self, message: str, *, retry_after: int, **details) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after
