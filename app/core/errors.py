"""The service's domain errors, beside trajx.errors.InvalidInput (a 422 at the HTTP edge).

Raised by the core and the worker, turned into problem+json only by `app.api.problems`.
`details` name the culprit (`field`, `artifact`, `tensor`) or carry several as `errors`.
"""

from collections.abc import Iterable

from trajx.errors import TrajxError


def field_path(loc: Iterable[str | int]) -> str:
    """A pydantic error location as users write it: `spec.targets[0].seed`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


class NotFound(TrajxError):
    """No such resource for this tenant (another tenant's id is reported the same way)."""

    code = "not_found"

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"no {what} with id {ident!r}", code=f"{what}_not_found")


class Conflict(TrajxError):
    """The resource's state forbids the request now (a finished job, an artifact in use)."""

    code = "conflict"
