"""Artifact records: inspect a stored file, record it for a tenant, read, list, delete.

The HTTP routes and the worker (which registers result files) share these functions,
so there is one path into the `artifacts` table.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app.models import (
    ARTIFACT_ID_PREFIX,
    LIVE_JOB_STATUSES,
    Artifact,
    Job,
    JobArtifact,
    is_id,
    utcnow,
)
from app.pagination import keyset_page
from app.problems import ProblemError, not_found
from app.safetensors_header import looks_like_safetensors, read_tensor_table
from app.settings import get_settings
from app.storage import ArtifactStore
from trajx.errors import InvalidInput

MAX_JSON_BYTES = 64 * 1024**2
DATA_TENSORS = {"inputs", "targets"}


@dataclass(frozen=True)
class FileInfo:
    """What inspecting a file found: its format, its role and its tensor table."""

    format: str
    kind: str
    tensors: list[dict[str, Any]] = field(default_factory=list)


def inspect_file(path: Path, name: str, max_header_bytes: int, *, result: bool = False,
                 **table_limits: int) -> FileInfo:
    """Classify `path`; InvalidInput (`invalid_safetensors`/`invalid_json`) if it claims a format it breaks.

    A file is safetensors if its name ends in `.safetensors` or its first bytes look like
    one; it is `data` when it has `inputs` and `targets`, else a `checkpoint` (or
    `result` when a job produced it). `.json` files must parse. Anything else is `other`.
    `table_limits` (`max_tensors`, `max_name_length`) go to `read_tensor_table`.
    """
    size = path.stat().st_size
    lower = name.lower()
    with open(path, "rb") as file:
        if lower.endswith(".json"):
            if size > MAX_JSON_BYTES:
                raise InvalidInput(f"JSON artifact is {size} bytes; the limit is {MAX_JSON_BYTES}",
                                   code="invalid_json")
            try:
                json.load(file)
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: a huge integer too
                raise InvalidInput(f"{name!r} is not valid JSON: {exc}", code="invalid_json") from None
            return FileInfo("json", "result" if result else "other")
        if not (lower.endswith(".safetensors") or looks_like_safetensors(file.read(9))):
            return FileInfo("other", "result" if result else "other")
        file.seek(0)
        tensors = read_tensor_table(file, size, max_header_bytes, **table_limits)
    if result:
        kind = "result"
    else:
        kind = "data" if DATA_TENSORS <= {t["name"] for t in tensors} else "checkpoint"
    return FileInfo("safetensors", kind, tensors)


def record_artifact(session: Session, tenant_id: str, sha256: str, size: int, name: str, info: FileInfo,
                    producer_job_id: str | None = None) -> Artifact:
    """Add an artifact row for a blob already in the store (flushes, does not commit)."""
    artifact = Artifact(tenant_id=tenant_id, sha256=sha256, size=size, name=name, format=info.format,
                        kind=info.kind, tensors=info.tensors, producer_job_id=producer_job_id,
                        created_at=utcnow())
    session.add(artifact)
    session.flush()
    return artifact


def create_artifact_from_file(session: Session, tenant_id: str, path: Path | str, name: str,
                              job_id: str | None, *, store: ArtifactStore | None = None,
                              max_header_bytes: int | None = None) -> Artifact:
    """Store a job's result file and record it as a `result` artifact of `tenant_id`.

    Validates safetensors headers like an upload (InvalidInput if malformed); JSON files
    get format "json". Flushes but does not commit: the caller owns the transaction.
    `store` and `max_header_bytes` default to the process settings.
    """
    settings = get_settings()
    store = store or ArtifactStore(settings.storage_dir)
    limit = max_header_bytes or settings.max_header_bytes
    path = Path(path)
    info = inspect_file(path, name, limit, result=True, max_tensors=settings.max_tensors_per_file,
                        max_name_length=settings.max_tensor_name_length)
    sha256, size = store.put_file(path)
    return record_artifact(session, tenant_id, sha256, size, name, info, producer_job_id=job_id)


def get_artifact(session: Session, tenant_id: str, artifact_id: str) -> Artifact:
    """The caller's live artifact; 404 problem if missing, deleted or another tenant's."""
    artifact = session.get(Artifact, artifact_id) if is_id(artifact_id, ARTIFACT_ID_PREFIX) else None
    if artifact is None or artifact.tenant_id != tenant_id or artifact.deleted_at is not None:
        raise not_found("artifact", artifact_id)
    return artifact


def list_artifacts(session: Session, tenant_id: str, *, limit: int, cursor: str | None = None,
                   sha256: str | None = None) -> tuple[list[Artifact], str | None]:
    """Newest first; returns (page, next_cursor) where next_cursor is None on the last page."""
    query = select(Artifact).where(Artifact.tenant_id == tenant_id, Artifact.deleted_at.is_(None))
    if sha256 is not None:
        query = query.where(Artifact.sha256 == sha256)
    return keyset_page(session, query, Artifact.id, limit=limit, cursor=cursor)


def delete_artifact(session: Session, store: ArtifactStore, tenant_id: str, artifact_id: str) -> None:
    """Soft-delete the artifact and drop its blob once no live artifact shares it; commits.

    409 `artifact_in_use` while a queued or running job reads it.
    """
    artifact = get_artifact(session, tenant_id, artifact_id)
    in_use = session.scalar(
        select(Job.id).join(JobArtifact, JobArtifact.job_id == Job.id)
        .where(JobArtifact.artifact_id == artifact.id, Job.status.in_(LIVE_JOB_STATUSES)).limit(1)
    )
    if in_use is not None:
        raise ProblemError(409, "artifact_in_use", f"artifact {artifact.id} is an input of live job {in_use}",
                           errors=[{"artifact": artifact.id, "message": f"used by job {in_use}"}])
    with store.lock(artifact.sha256):
        artifact.deleted_at = utcnow()
        shared = blob_in_use(session, artifact.sha256)  # autoflush: this one no longer counts
        session.commit()
        if not shared:
            store.delete(artifact.sha256)


def blob_in_use(session: Session, sha256: str) -> bool:
    """Whether a live artifact references blob `sha256`; ask under the blob's lock."""
    return bool(session.scalar(select(exists().where(Artifact.sha256 == sha256, Artifact.deleted_at.is_(None)))))
