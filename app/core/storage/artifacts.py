"""Artifact records: inspect a file, publish an upload, record a job's result, read, list, delete.

The HTTP routes and the worker (which registers result files) share these functions,
so there is one path into the `artifacts` table.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.errors import Conflict, NotFound
from app.core.jobs.idempotency import rebind, remember, replayed_resource, request_hash
from app.core.persistence.models import (
    ARTIFACT_ID_PREFIX,
    LIVE_JOB_STATUSES,
    Artifact,
    Job,
    JobArtifact,
    is_id,
    utcnow,
)
from app.core.persistence.pagination import keyset_page
from app.core.persistence.text_match import contains_ignoring_case
from app.core.settings import Settings
from app.core.storage.safetensors_header import looks_like_safetensors, read_tensor_table
from app.core.storage.store import ArtifactStore, BlobWriter
from app.core.tenancy.limits import check_stored_bytes
from trajx.errors import InvalidInput
from trajx.executors.manifest import ResultFile
from trajx.program.document import check_program, is_program_document

log = logging.getLogger(__name__)
ARTIFACTS_PATH = "/v1/artifacts"
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
    """`inspect_content` of the local file `path`."""
    with open(path, "rb") as file:
        return inspect_content(file, path.stat().st_size, name, max_header_bytes, result=result, **table_limits)


def inspect_content(file: BinaryIO, size: int, name: str, max_header_bytes: int, *, result: bool = False,
                    **table_limits: int) -> FileInfo:
    """Classify the `size` bytes of the seekable `file`; InvalidInput (`invalid_safetensors`/
    `invalid_json`) if it claims a format it breaks.

    A file is safetensors if its name ends in `.safetensors` or its first bytes look like
    one; it is `data` when it has `inputs` and `targets`, else a `checkpoint` (or
    `result` when a job produced it). `.json` files must parse; one that says it is a
    model program is a `program` once `trajx.program.document` accepts it (InvalidInput
    naming the operator or member otherwise). Anything else is `other`.
    `table_limits` (`max_tensors`, `max_name_length`) go to `read_tensor_table`.
    """
    lower = name.lower()
    if lower.endswith(".json"):
        if size > MAX_JSON_BYTES:
            raise InvalidInput(f"JSON artifact is {size} bytes; the limit is {MAX_JSON_BYTES}",
                               code="invalid_json")
        try:
            document = json.load(file)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: a huge integer too
            raise InvalidInput(f"{name!r} is not valid JSON: {exc}", code="invalid_json") from None
        if not result and is_program_document(document):
            check_program(document)  # refused here, naming the op or member, before any job uses it
            return FileInfo("json", "program")
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


def record_result(session: Session, tenant_id: str, out_dir: Path, entry: ResultFile, job_id: str,
                  settings: Settings) -> Artifact:
    """Record an executor's result file, already published in the store as its manifest
    entry describes it, as a `result` artifact of `tenant_id`.

    Safetensors headers are validated like an upload's (InvalidInput if malformed); the
    name is the entry's path with `/` as `-`. Flushes, does not commit: once the caller
    committed, `store.ensure` each file (see `app.core.storage.store`).
    """
    path = out_dir / entry.path
    name = entry.path.replace("/", "-")
    info = inspect_file(path, name, settings.max_header_bytes, result=True, **table_limits(settings))
    return record_artifact(session, tenant_id, entry.sha256, entry.size, name, info, producer_job_id=job_id)


def table_limits(settings: Settings) -> dict[str, int]:
    """The tensor-table limits of `read_tensor_table`, from the settings."""
    return {"max_tensors": settings.max_tensors_per_file, "max_name_length": settings.max_tensor_name_length}


def publish_upload(session: Session, store: ArtifactStore, writer: BlobWriter, tenant_id: str, name: str,
                   settings: Settings, idempotency_key: str | None = None) -> Artifact:
    """Check an uploaded file, publish it in the store and record it; commits.

    InvalidInput when the file breaks its format, QuotaExceeded past the tenant's stored
    bytes. With `idempotency_key`, a retry gets the artifact recorded before (or, if that
    one was deleted since, stores this upload again). If recording fails (a reused key, a
    database error), bytes this upload brought into the store are removed again unless a
    live artifact shares them. No lock: see `app.core.storage.store`.
    """
    found: list[FileInfo] = []

    def inspect(file: BinaryIO, size: int) -> None:
        found.append(inspect_content(file, size, name, settings.max_header_bytes, **table_limits(settings)))

    sha256 = writer.finish()
    new_blob = writer.commit(inspect)
    try:
        artifact = _record_upload(session, tenant_id, idempotency_key, sha256, writer.size, name, found[0], settings)
    except BaseException:
        writer.abort()
        if new_blob:
            try:
                drop_blob_if_unused(session, store, sha256)
            except Exception:  # the database or store is away: an unreferenced blob only costs space
                log.warning("could not remove blob %s of a failed upload", sha256, exc_info=True)
        raise
    writer.settle()
    return artifact


def _record_upload(session: Session, tenant_id: str, key: str | None, sha256: str, size: int, name: str,
                   info: FileInfo, settings: Settings) -> Artifact:
    req_hash = request_hash({"sha256": sha256, "name": name})
    earlier = replayed_resource(session, tenant_id, key, ARTIFACTS_PATH, req_hash) if key else None
    if earlier is not None:
        live = session.get(Artifact, earlier)
        if live is not None and live.deleted_at is None:
            return live
    check_stored_bytes(session, tenant_id, settings.tenant_max_stored_bytes, size)
    artifact = record_artifact(session, tenant_id, sha256, size, name, info)
    if earlier is not None:
        # The key's artifact was deleted since: this retry stores the upload again.
        rebind(session, tenant_id, key, ARTIFACTS_PATH, artifact.id)
    elif key is not None:
        remember(session, tenant_id, key, ARTIFACTS_PATH, req_hash, artifact.id)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # a concurrent retry with the same key committed first
        earlier = replayed_resource(session, tenant_id, key or "", ARTIFACTS_PATH, req_hash)
        if earlier is None:
            raise
        artifact = get_artifact(session, tenant_id, earlier)
    return artifact


def get_artifact(session: Session, tenant_id: str, artifact_id: str) -> Artifact:
    """The caller's live artifact; NotFound if missing, deleted or another tenant's."""
    artifact = session.get(Artifact, artifact_id) if is_id(artifact_id, ARTIFACT_ID_PREFIX) else None
    if artifact is None or artifact.tenant_id != tenant_id or artifact.deleted_at is not None:
        raise NotFound("artifact", artifact_id)
    return artifact


def list_artifacts(session: Session, tenant_id: str, *, limit: int, cursor: str | None = None,
                   sha256: str | None = None, kind: str | None = None, name: str | None = None,
                   job: str | None = None, produced: bool | None = None) -> tuple[list[Artifact], str | None]:
    """Newest first; returns (page, next_cursor) where next_cursor is None on the last page.
    Filters: `kind`, a part of the `name` (any case), the producing `job`, `produced` (job
    results) or not (uploads)."""
    query = select(Artifact).where(Artifact.tenant_id == tenant_id, Artifact.deleted_at.is_(None))
    if sha256 is not None:
        query = query.where(Artifact.sha256 == sha256)
    if kind is not None:
        query = query.where(Artifact.kind == kind)
    if name is not None:
        query = query.where(contains_ignoring_case(Artifact.name, name))
    if job is not None:
        query = query.where(Artifact.producer_job_id == job)
    if produced is not None:
        query = query.where(Artifact.producer_job_id.is_not(None) if produced else Artifact.producer_job_id.is_(None))
    return keyset_page(session, query, Artifact.id, limit=limit, cursor=cursor)


def delete_artifact(session: Session, store: ArtifactStore, tenant_id: str, artifact_id: str) -> None:
    """Soft-delete the artifact and drop its blob once no live artifact shares it; commits.

    Conflict `artifact_in_use` while a queued or running job reads it.
    """
    artifact = get_artifact(session, tenant_id, artifact_id)
    in_use = session.scalar(
        select(Job.id).join(JobArtifact, JobArtifact.job_id == Job.id)
        .where(JobArtifact.artifact_id == artifact.id, Job.status.in_(LIVE_JOB_STATUSES)).limit(1)
    )
    if in_use is not None:
        raise Conflict(f"artifact {artifact.id} is an input of live job {in_use}", code="artifact_in_use",
                       errors=[{"artifact": artifact.id, "message": f"used by job {in_use}"}])
    artifact.deleted_at = utcnow()
    session.commit()
    drop_blob_if_unused(session, store, artifact.sha256)


def blob_in_use(session: Session, sha256: str) -> bool:
    """Whether a live artifact references blob `sha256` (as of `session`'s snapshot)."""
    return bool(session.scalar(select(exists().where(Artifact.sha256 == sha256, Artifact.deleted_at.is_(None)))))


def drop_blob_if_unused(session: Session, store: ArtifactStore, sha256: str) -> bool:
    """Delete blob `sha256` from the store unless a live artifact references it, looking at
    the committed rows afresh before and after hiding it (`ArtifactStore.remove_unreferenced`).
    Ends `session`'s transaction (rolls back anything uncommitted)."""
    def referenced() -> bool:
        session.rollback()  # a new snapshot: rows committed meanwhile must count
        return blob_in_use(session, sha256)

    try:
        return store.remove_unreferenced(sha256, referenced)
    finally:
        session.rollback()
