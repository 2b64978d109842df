"""OpenAPI documentation of problem+json error responses."""

from typing import Any

from app.problems import PROBLEM_MEDIA_TYPE, Problem

_DESCRIPTIONS = {
    400: "malformed request", 401: "missing, unknown or revoked API key",
    404: "no such resource for this tenant", 409: "conflicts with the resource's state",
    413: "body larger than the upload limit (TRAJX_MAX_UPLOAD_BYTES)", 416: "range not satisfiable",
    422: "invalid request (the `errors` list names each offending field, artifact or tensor)",
    503: "not ready",
}


def problem_responses(*statuses: int, descriptions: dict[int, str] | None = None
                      ) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these status codes, each a problem+json body.

    `descriptions` replaces the generic description of some of them.
    """
    schema = {"$ref": "#/components/schemas/Problem"}
    described = {**_DESCRIPTIONS, **(descriptions or {})}
    return {status: {"model": Problem, "description": described[status],
                     "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}} for status in statuses}
