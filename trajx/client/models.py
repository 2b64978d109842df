"""Typed views of the API's resources (docs/architecture.md, "HTTP contract").

Unknown fields are kept (`extra="allow"`) so a newer server never breaks an older
client; `raw` gives back the document exactly as the server sent it.
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class _Resource(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    @property
    def raw(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class TensorInfo(_Resource):
    name: str
    dtype: str
    shape: list[int]


class Artifact(_Resource):
    id: str
    name: str | None = None
    sha256: str
    size: int
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


class Job(_Resource):
    id: str
    kind: str | None = None
    status: str
    spec: dict[str, Any] = Field(default_factory=dict)
    progress: Progress | None = None
    attempts: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None
    result: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def result_files(self) -> dict[str, str]:
        """Result artifact ids keyed by the relative path they are saved under.

        `target-{i}/{last,best,permutations,trajectory}.safetensors` and `report.json`,
        mirroring the runner's output directory; absent outputs are skipped.
        """
        files: dict[str, str] = {}
        result = self.result or {}
        for i, target in enumerate(result.get("targets") or []):
            for role, artifact_id in (target or {}).items():
                if isinstance(artifact_id, str):
                    files[f"target-{i}/{role}.safetensors"] = artifact_id
        if isinstance(result.get("report"), str):
            files["report.json"] = result["report"]
        return files


class Event(_Resource):
    id: int | str
    type: str
    created_at: datetime | None = None
    data: dict[str, Any] | None = None
