"""OpenAPI documentation of problem+json error responses."""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.api.problems import PROBLEM_MEDIA_TYPE, Problem

_DESCRIPTIONS = {
    400: "malformed request", 401: "missing, unknown or revoked API key",
    404: "no such resource for this tenant", 409: "conflicts with the resource's state",
    413: "body larger than the upload limit (TRAJX_MAX_UPLOAD_BYTES)", 416: "range not satisfiable",
    422: "invalid request (the `errors` list names each offending field, artifact or tensor)",
    403: "a tenant quota is exhausted (TRAJX_TENANT_MAX_STORED_BYTES)",
    429: "too many queued jobs for this tenant (TRAJX_TENANT_MAX_QUEUED_JOBS); see Retry-After",
    503: "the database or the artifact store is unavailable; `Retry-After` says when to try again",
    507: "the artifact store is full (`storage_full`); nothing was kept",
}
# Every /v1 route authenticates, validates its input and needs the database. Declaring 422
# also keeps FastAPI from documenting its own HTTPValidationError body, which this API never sends.
V1_PROBLEMS = (401, 422, 503)


def problem_responses(*statuses: int, descriptions: dict[int, str] | None = None
                      ) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these status codes, each a problem+json body (and nothing else).

    `descriptions` replaces the generic description of some of them.
    """
    schema = {"$ref": "#/components/schemas/Problem"}
    described = {**_DESCRIPTIONS, **(descriptions or {})}
    return {status: {"description": described[status], "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}}
            for status in statuses}


def document_problems(app: FastAPI) -> None:
    """Add the Problem schema the error responses refer to to `app`'s OpenAPI components.

    (A `model=` in `responses` would add it too, but also document an application/json body.)
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Problem" not in components:
            problem = Problem.model_json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
            components.update(problem.pop("$defs", {}), Problem=problem)
        return schema

    app.openapi = openapi
