"""What an executor produced: its files (role, target, path, sha256, size, metadata) and summary.

The worker stores a manifest as is, the job resource shows it, the client downloads from
it: nobody re-derives result paths from a naming convention. Stdlib only (the client
and the API read manifests without torch).
"""

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Self

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ResultFile:
    """One result file. `path` is relative to the executor's `out_dir` (POSIX separators);
    `target` is the index of the target it belongs to, None for job-wide files."""

    role: str
    target: int | None
    path: str
    sha256: str
    size: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        relative = PurePosixPath(self.path)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"a result path must stay inside out_dir: {self.path!r}")

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Self:
        return cls(role=document["role"], target=document.get("target"), path=document["path"],
                   sha256=document["sha256"], size=document["size"],
                   metadata=dict(document.get("metadata") or {}))


@dataclass(frozen=True)
class ResultManifest:
    """Every result file of a run and its JSON-serialisable summary."""

    files: list[ResultFile]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"files": [asdict(f) for f in self.files], "summary": self.summary}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Self:
        return cls([ResultFile.from_json(f) for f in document["files"]], dict(document.get("summary") or {}))


def file_entry(out_dir: Path, path: Path, role: str, target: int | None = None,
               metadata: dict[str, Any] | None = None) -> ResultFile:
    """The manifest entry of a file an executor has written under `out_dir` (hashed once, here)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return ResultFile(role=role, target=target, path=path.relative_to(out_dir).as_posix(),
                      sha256=digest.hexdigest(), size=size, metadata=metadata or {})
