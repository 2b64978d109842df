"""Typed views of the API's resources (docs/architecture.md, "HTTP contract").

Frozen stdlib dataclasses, so the client needs nothing beyond httpx. `from_dict`
ignores fields this client does not know, so a newer server never breaks an
older client; `raw` keeps the document exactly as the server sent it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Self

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
Converters = dict[str, Callable[[Any], Any]]


def _parse_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value)  # ISO 8601, "Z" included (Python >= 3.11)


class _Resource:
    """`from_dict` for the dataclasses below; `_converters` parses nested fields.

    Each has a last field `raw`: the server's document (empty for one built by hand).
    """

    _converters: ClassVar[Converters] = {}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Self:
        """Build from an API document; unknown keys are ignored, missing optional ones default.

        Raises TypeError when `doc` is not an object or lacks a required field.
        """
        if not isinstance(doc, dict):
            raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(doc).__name__}")
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name == "raw" or f.name not in doc:
                continue
            value, convert = doc[f.name], cls._converters.get(f.name)
            values[f.name] = convert(value) if convert and value is not None else value
        return cls(**values, raw=doc)


def _list_of(resource: type[_Resource]) -> Callable[[list[dict[str, Any]]], list[Any]]:
    return lambda docs: [resource.from_dict(doc) for doc in docs]


@dataclass(frozen=True)
class TensorInfo(_Resource):
    name: str
    dtype: str
    shape: list[int]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Artifact(_Resource):
    id: str
    sha256: str
    size: int
    name: str | None = None
    format: str | None = None
    kind: str | None = None
    tensors: list[TensorInfo] | None = None
    created_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _converters: ClassVar[Converters] = {"tensors": _list_of(TensorInfo), "created_at": _parse_datetime}


@dataclass(frozen=True)
class Progress(_Resource):
    step: int | None = None
    total: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class JobError(_Resource):
    code: str
    message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ResultFile(_Resource):
    """One entry of a job's result manifest: the artifact that holds the file `path`
    (relative to a results directory) of `role`, for target `target` (None: job-wide)."""

    role: str
    path: str
    sha256: str
    size: int
    artifact: str
    target: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Job(_Resource):
    id: str
    status: str
    kind: str | None = None
    name: str | None = None
    labels: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    progress: Progress | None = None
    attempts: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None
    result: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    # Set by `Client.create_job` when an Idempotency-Key replay returned a job created before.
    replayed: bool = field(default=False, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _converters: ClassVar[Converters] = {
        "progress": Progress.from_dict, "error": JobError.from_dict, "created_at": _parse_datetime,
        "started_at": _parse_datetime, "finished_at": _parse_datetime}

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


@dataclass(frozen=True)
class Event(_Resource):
    id: int | str
    type: str
    created_at: datetime | None = None
    data: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _converters: ClassVar[Converters] = {"created_at": _parse_datetime}
