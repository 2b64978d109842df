"""`/v1/artifacts`: upload (streamed), read, download (Range, ETag), list, delete."""

import itertools
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from app.api.deps import Services, ServicesDep, TenantId
from app.api.download_links import sign_link, verify_link
from app.api.problems import ProblemError
from app.api.responses import V1_PROBLEMS, problem_responses
from app.api.schemas import ArtifactPublic, ArtifactsPage, DownloadLink, TensorsPage
from app.api.uploads import receive_body
from app.core.jobs.idempotency import check_key
from app.core.persistence.models import ARTIFACT_ID_PREFIX, JOB_ID_PREFIX, id_pattern
from app.core.settings import Settings
from app.core.storage import artifacts
from app.core.storage.errors import StorageFull, TooLarge
from app.core.storage.store import ArtifactStore, BlobWriter

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"], responses=problem_responses(*V1_PROBLEMS))
# Signed links work without the Authorization header, so they live outside /v1.
links_router = APIRouter(prefix="/downloads", tags=["artifacts"], responses=problem_responses(422, 503))
MEDIA_TYPES = {"safetensors": "application/octet-stream", "json": "application/json",
               "other": "application/octet-stream"}

class ArtifactContent(FileResponse):
    # Each chunk is one thread-pool read; Starlette's 64 KiB would mean 16k hops per GiB.
    chunk_size = 1024 * 1024


NameQuery = Annotated[str | None, Query(min_length=1, max_length=255,
                                        description="display name; defaults to the multipart filename")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
RangeHeader = Annotated[str | None, Header(alias="Range")]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]
ArtifactKind = Literal["checkpoint", "data", "program", "result", "other"]
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}, "name": {"type": "string"}}}},
}}}


@router.post("", status_code=201, response_model=ArtifactPublic, openapi_extra=_UPLOAD_BODY,
             responses=problem_responses(400, 403, 413, 507))
async def create_artifact(request: Request, services: ServicesDep, tenant_id: TenantId,
                          name: NameQuery = None, idempotency_key: IdempotencyKey = None) -> ArtifactPublic:
    """Upload a file (raw body or multipart `file`); safetensors headers are validated."""
    key = check_key(idempotency_key)
    settings = services.settings
    is_form = request.headers.get("content-type", "").startswith("multipart/form-data")
    if name is None and not is_form:
        raise ProblemError(422, "missing_name", "give the artifact a name with `?name=`",
                           errors=[{"field": "name", "message": "required for a raw body"}])
    _refuse_declared_oversize(request, settings.max_upload_bytes)
    _refuse_when_full(request, services.store, settings.storage_min_free_bytes)
    # Starting, finishing and dropping a write may be network calls (S3): off the event loop.
    writer = await run_in_threadpool(services.store.writer, settings.max_upload_bytes)
    try:
        try:
            body = await receive_body(request, writer)
        except TooLarge as exc:
            raise ProblemError(413, "payload_too_large", str(exc)) from None
        except ClientDisconnect:
            raise ProblemError(400, "client_disconnected", "the client closed the upload early") from None
        name = _display_name(name or body.form_name or body.filename)
        if writer.size == 0:
            raise ProblemError(422, "empty_upload", "the upload has no content",
                               errors=[{"field": "body", "message": "empty"}])
        await run_in_threadpool(writer.finish)
        return await services.db.run_once(_publish_upload, services.store, writer, tenant_id, key, name, settings)
    finally:
        await run_in_threadpool(writer.abort)  # a no-op once settled


def _refuse_declared_oversize(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, "payload_too_large", f"content exceeds the limit of {limit} bytes")


def _refuse_when_full(request: Request, store: ArtifactStore, min_free: int) -> None:
    # Refused before a byte is read: a full disk would fail the write anyway, later.
    free = store.free_bytes()
    if free is None:
        return
    declared = request.headers.get("content-length", "")
    needed = min_free + (int(declared) if declared.isdigit() else 0)
    if free < needed:
        raise StorageFull(f"the artifact store has {free} bytes free; this upload needs {needed} "
                          f"(TRAJX_STORAGE_MIN_FREE_BYTES={min_free} kept free)")


def _display_name(name: str | None) -> str:
    if not name or len(name) > 255 or not name.isprintable():
        raise ProblemError(422, "missing_name", "the artifact needs a printable name of 1 to 255 characters",
                           errors=[{"field": "name", "message": "missing or not printable"}])
    return name


def _publish_upload(session: Session, store: ArtifactStore, writer: BlobWriter, tenant_id: str,
                    key: str | None, name: str, settings: Settings) -> ArtifactPublic:
    artifact = artifacts.publish_upload(session, store, writer, tenant_id, name, settings, key)
    return ArtifactPublic.model_validate(artifact)


@router.get("", response_model=ArtifactsPage)
async def list_artifacts(services: ServicesDep, tenant_id: TenantId,
                         cursor: Annotated[str | None, Query(pattern=id_pattern(ARTIFACT_ID_PREFIX))] = None,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50,
                         sha256: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
                         kind: ArtifactKind | None = None,
                         name: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
                         job: Annotated[str | None, Query(pattern=id_pattern(JOB_ID_PREFIX))] = None,
                         produced: Annotated[bool | None, Query(
                             description="true: job results only; false: uploads only")] = None) -> ArtifactsPage:
    """The caller's artifacts, newest first; filters: content hash `sha256`, `kind`, a part of
    the `name` (any case), the producing `job`, results or uploads (`produced`)."""
    def page(session: Session) -> ArtifactsPage:
        rows, next_cursor = artifacts.list_artifacts(session, tenant_id, limit=limit, cursor=cursor,
                                                     sha256=sha256, kind=kind, name=name, job=job,
                                                     produced=produced)
        return ArtifactsPage(data=[ArtifactPublic.model_validate(a) for a in rows], next_cursor=next_cursor)

    return await services.db.run(page)


@router.get("/{artifact_id}", response_model=ArtifactPublic, responses=problem_responses(404))
async def read_artifact(services: ServicesDep, tenant_id: TenantId, artifact_id: str) -> ArtifactPublic:
    """An artifact's metadata, tensor table included."""
    return await services.db.run(_public, tenant_id, artifact_id)


def _public(session: Session, tenant_id: str, artifact_id: str) -> ArtifactPublic:
    return ArtifactPublic.model_validate(artifacts.get_artifact(session, tenant_id, artifact_id))


@router.get("/{artifact_id}/tensors", response_model=TensorsPage, responses=problem_responses(404))
async def list_artifact_tensors(services: ServicesDep, tenant_id: TenantId, artifact_id: str,
                                offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
                                limit: Annotated[int, Query(ge=1, le=1000)] = 1000) -> TensorsPage:
    """The artifact's tensor table in file order, `limit` entries from `offset`."""
    def page(session: Session) -> TensorsPage:
        tensors = artifacts.get_artifact(session, tenant_id, artifact_id).tensors or []
        end = offset + limit
        return TensorsPage(data=tensors[offset:end], next_offset=end if end < len(tensors) else None)

    return await services.db.run(page)


@router.get("/{artifact_id}/content", response_class=ArtifactContent, responses={
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "description": "the bytes; `ETag` is the quoted sha256"},
    206: {"description": "the requested byte range (`Range: bytes=...`)"},
    304: {"description": "`If-None-Match` matched the ETag"},
    **problem_responses(400, 404, 416)})
async def read_artifact_content(services: ServicesDep, tenant_id: TenantId, artifact_id: str,
                                range_: RangeHeader = None, if_none_match: IfNoneMatch = None):
    """Stream the artifact's bytes; supports `Range` (206) and `If-None-Match` (304)."""
    return await _content(services, tenant_id, artifact_id, range_, if_none_match)


@router.post("/{artifact_id}/link", response_model=DownloadLink, responses=problem_responses(404))
async def create_download_link(request: Request, services: ServicesDep, tenant_id: TenantId,
                               artifact_id: str) -> DownloadLink:
    """A link to the artifact's bytes that works without the `Authorization` header for
    five minutes (a browser follows it and streams the file to disk)."""
    await services.db.run(_public, tenant_id, artifact_id)
    token, expires = sign_link(services.settings.link_secret, tenant_id, artifact_id)
    url = request.url_for("download_by_link", artifact_id=artifact_id).include_query_params(token=token)
    return DownloadLink(url=url.path + "?" + url.query, expires_at=datetime.fromtimestamp(expires, UTC))


@links_router.get("/{artifact_id}", response_class=ArtifactContent, name="download_by_link",
            responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the bytes, as an attachment"},
                 206: {"description": "the requested byte range (`Range: bytes=...`)"},
                 304: {"description": "`If-None-Match` matched the ETag"}, **problem_responses(400, 403, 404, 416)})
async def download_by_link(services: ServicesDep, artifact_id: str,
                           token: Annotated[str, Query(min_length=10, max_length=1000)],
                           range_: RangeHeader = None, if_none_match: IfNoneMatch = None):
    """The bytes behind a link from `POST /v1/artifacts/{id}/link` (no `Authorization` needed)."""
    tenant_id = verify_link(services.settings.link_secret, token, artifact_id)
    return await _content(services, tenant_id, artifact_id, range_, if_none_match)


async def _content(services: Services, tenant_id: str, artifact_id: str, range_: str | None,
                   if_none_match: str | None) -> Response:
    artifact = await services.db.run(_public, tenant_id, artifact_id)
    etag = f'"{artifact.sha256}"'
    if if_none_match is not None and (if_none_match.strip() == "*" or etag in if_none_match):
        return Response(status_code=304, headers={"ETag": etag})
    store = services.store
    ranges = _check_range(range_, artifact.size) if range_ is not None else None
    path = store.local_path(artifact.sha256)
    if path is not None:
        if not path.is_file():
            raise ProblemError(404, "artifact_content_missing", f"the bytes of {artifact.id} are not in the store")
        return ArtifactContent(path, media_type=MEDIA_TYPES[artifact.format], filename=artifact.name,
                               headers={"ETag": etag})
    url = await run_in_threadpool(store.download_url, artifact.sha256, artifact.name)
    if url is not None:
        return RedirectResponse(url, status_code=307, headers={"ETag": etag, "Cache-Control": "no-store"})
    return await run_in_threadpool(_streamed, store, artifact, etag, ranges)


def _streamed(store: ArtifactStore, artifact: ArtifactPublic, etag: str,
              ranges: list[tuple[int, int]] | None) -> StreamingResponse:
    """The bytes from a remote store, one range (a multi-range request gets them all, 200)."""
    headers = {"ETag": etag, "Accept-Ranges": "bytes",
               "Content-Disposition": f"attachment; filename*=utf-8''{quote(artifact.name)}"}
    status, first, last = 200, 0, artifact.size - 1
    if ranges is not None and len(ranges) == 1:
        (first, end), status = ranges[0], 206  # Starlette's ranges end one past the last byte
        last = end - 1
        headers["Content-Range"] = f"bytes {first}-{last}/{artifact.size}"
    headers["Content-Length"] = str(last - first + 1)
    chunks = store.read_blob(artifact.sha256, first, last)
    try:
        head = next(chunks, b"")  # reach the store now, so that a failure is a 503, not a cut stream
    except FileNotFoundError:
        raise ProblemError(404, "artifact_content_missing", f"the bytes of {artifact.id} are not in the store") from None
    return StreamingResponse(itertools.chain([head], chunks), status_code=status,
                             media_type=MEDIA_TYPES[artifact.format], headers=headers)


def _check_range(header: str, size: int) -> list[tuple[int, int]]:
    # FileResponse would answer a bad Range in plain text; parse it first to answer problem+json.
    # (A pinned Starlette's parser, so the check and the response always agree.)
    try:
        return FileResponse._parse_range_header(header, size)
    except MalformedRangeHeader as exc:
        raise ProblemError(400, "invalid_range", exc.content,
                           errors=[{"field": "Range", "message": exc.content}]) from None
    except RangeNotSatisfiable:
        raise ProblemError(416, "range_not_satisfiable", f"the range lies outside the {size}-byte artifact",
                           headers={"Content-Range": f"bytes */{size}"}) from None


@router.delete("/{artifact_id}", status_code=204, response_class=Response,
               responses=problem_responses(404, 409))
async def delete_artifact(services: ServicesDep, tenant_id: TenantId, artifact_id: str) -> Response:
    """Delete an artifact (409 `artifact_in_use` while a queued or running job reads it)."""
    await services.db.run(artifacts.delete_artifact, services.store, tenant_id, artifact_id)
    return Response(status_code=204)
