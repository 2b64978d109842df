"""Typed views of the API's resources (docs/architecture.md, "HTTP contract").

Frozen pydantic models. Fields this client does not know are ignored, so a newer
server never breaks an older client; `raw` keeps the document exactly as the server sent it.
"""

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class _Resource(BaseModel):
    """A resource as the server sent it: ISO 8601 datetimes and nested resources parsed.

    Each has a field `raw`: the server's document (for one built by hand, its fields).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    raw: dict[str, Any] = Field(default_factory=dict, repr=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _keep_document(cls, data: Any) -> Any:
        # Nested resources (a job's progress, an artifact's tensors) keep their own documents.
        return {**data, "raw": data} if isinstance(data, dict) and "raw" not in data else data

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Self:
        """Build from an API document; unknown keys are ignored, missing optional ones default.

        Raises TypeError when `doc` is not an object or lacks a required field.
        """
        if not isinstance(doc, dict):
            raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(doc).__name__}")
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise TypeError(f"{cls.__name__}: {exc}") from exc


class TensorInfo(_Resource):
    name: str
    dtype: str
    shape: list[int]


class Artifact(_Resource):
    id: str
    sha256: str
    size: int
    name: str | None = None
    format: str | None = None
    kind: str | None = None
    tensors: list[TensorInfo] | None = None
    created_at: datetime | None = None


class Progress(_Resource):
    step: int | None = None
    total: int | None = None


class JobError(_Resource):
    code: str
    message: str | None = None


class ResultFile(_Resource):
    """One entry of a job's result manifest: the artifact that holds the file `path`
    (relative to a results directory) of `role`, for target `target` (None: job-wide)."""

    role: str
    path: str
    sha256: str
    size: int
    artifact: str
    target: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Job(_Resource):
    id: str
    status: str
    kind: str | None = None
    name: str | None = None
    labels: list[str] = Field(default_factory=list)
    spec: dict[str, Any] = Field(default_factory=dict)
    progress: Progress | None = None
    attempts: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None
    result: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    # Set by `Client.create_job` when an Idempotency-Key replay returned a job created before.
    replayed: bool = False

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def files(self) -> list[ResultFile]:
        """The result manifest: every result file, as the executor listed it."""
        return [ResultFile.from_dict(doc) for doc in (self.result or {}).get("files") or []]

    def result_file(self, role: str, target: int | None = None) -> ResultFile | None:
        """The result file of `role` (for `target`), None if the job has none."""
        return next((f for f in self.files if f.role == role and f.target == target), None)

    def result_files(self) -> dict[str, str]:
        """Result artifact ids keyed by the relative path the executor wrote them under."""
        return {f.path: f.artifact for f in self.files}


class Event(_Resource):
    id: int | str
    type: str
    created_at: datetime | None = None
    data: dict[str, Any] | None = None
