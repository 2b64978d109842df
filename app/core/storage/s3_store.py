"""The S3 backend: blobs in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, ...).

Blobs live at `<prefix>blobs/ab/<sha256>`. An upload streams into a multipart upload
at `<prefix>staging/<uuid>` while it is hashed (one part in memory at a time); once the
hash and size are known and the content passed its check, the staging object is copied
server-side to the blob's key. An object appears only when its upload completes, so no
partial blob is ever visible; an aborted upload aborts its multipart upload, and
`sweep` aborts those a dead process left. Workers read through a `BlobCache` and
publish results straight to the blob key (their sha256 is known up front).

boto3 (botocore + s3transfer): the reference client, kept by AWS, with managed
multipart transfers (threads, retries) and presigned URLs; an async client would not
help here, since every call already runs in a worker thread. No torch here.
"""

import hashlib
import io
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import boto3
from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.core.settings import Settings
from app.core.storage.blob_cache import BlobCache
from app.core.storage.errors import StorageFull, StorageUnavailable
from app.core.storage.store import READ_CHUNK, ArtifactStore, BlobWriter, Check, check_sha256

log = logging.getLogger(__name__)
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
_FULL = {"QuotaExceeded", "InsufficientStorage", "XMinioStorageFull"}


@contextmanager
def _calls(what: str) -> Iterator[None]:
    """Object-store errors as the store's own: FileNotFoundError, StorageFull, StorageUnavailable."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _MISSING or status == 404:
            raise FileNotFoundError(what) from None
        if code in _FULL or status == 507:
            raise StorageFull(f"the object store has no room for {what}: {code}") from None
        if status >= 500 or code in ("SlowDown", "RequestTimeout"):
            raise StorageUnavailable(f"the object store failed on {what}: {code or status}") from None
        raise
    except (BotoCoreError, S3UploadFailedError, S3TransferFailedError) as exc:
        # Connection refused or reset, timeouts: the store is away, not the request wrong.
        raise StorageUnavailable(f"the object store is unreachable ({what}): {type(exc).__name__}") from None


@lru_cache(maxsize=1)
def _session() -> boto3.session.Session:
    # Loading the service model takes most of a second: once per process.
    return boto3.session.Session()


class S3Writer(BlobWriter):
    """A multipart upload to a staging key; parts of `part_bytes` are sent as they fill."""

    def __init__(self, store: "S3Store", max_bytes: int | None) -> None:
        super().__init__(max_bytes)
        self._store = store
        self.key = f"{store.prefix}staging/{uuid.uuid4().hex}"
        with _calls(f"starting upload {self.key}"):
            self._upload_id: str | None = store.client.create_multipart_upload(
                Bucket=store.bucket, Key=self.key)["UploadId"]
        self._staged = False  # completed: an object at `key` until settled or aborted
        self._buffer = bytearray()
        self._parts: list[dict] = []
        self._hash = hashlib.sha256()
        self._sha256: str | None = None

    def write(self, *chunks: bytes) -> None:
        self._count(chunks)
        for chunk in chunks:
            self._hash.update(chunk)
            self._buffer += chunk
        part = self._store.part_bytes
        while len(self._buffer) >= part:
            self._send(bytes(self._buffer[:part]))
            del self._buffer[:part]

    def _send(self, data: bytes) -> None:
        number = len(self._parts) + 1
        try:
            with _calls(f"part {number} of {self.key}"):
                etag = self._store.client.upload_part(Bucket=self._store.bucket, Key=self.key,
                                                      UploadId=self._upload_id, PartNumber=number,
                                                      Body=data)["ETag"]
        except BaseException:
            self.abort()
            raise
        self._parts.append({"PartNumber": number, "ETag": etag})

    def finish(self) -> str:
        if self._sha256 is None:
            if self._buffer or not self._parts:
                self._send(bytes(self._buffer))  # the last part may be short (or empty)
                self._buffer = bytearray()
            try:
                with _calls(f"completing {self.key}"):
                    self._store.client.complete_multipart_upload(
                        Bucket=self._store.bucket, Key=self.key, UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts})
            except BaseException:
                self.abort()
                raise
            self._upload_id, self._staged = None, True
            self._sha256 = self._hash.hexdigest()
        return self._sha256

    def commit(self, check: Check | None = None) -> bool:
        sha256 = self.finish()
        try:
            if check is not None:
                with self._store.open_key(self.key, self.size) as file:
                    check(file, self.size)
            return self._store.copy_in(self.key, sha256)
        except BaseException:
            self.abort()
            raise

    def settle(self) -> None:
        if self._sha256 is not None and self._staged and not self._store.exists(self._sha256):
            self._store.copy_in(self.key, self._sha256)
        self.abort()

    def abort(self) -> None:
        store = self._store
        try:
            if self._upload_id is not None:
                upload_id, self._upload_id = self._upload_id, None
                with _calls(f"aborting {self.key}"):
                    store.client.abort_multipart_upload(Bucket=store.bucket, Key=self.key, UploadId=upload_id)
            if self._staged:
                self._staged = False
                with _calls(f"removing {self.key}"):
                    store.client.delete_object(Bucket=store.bucket, Key=self.key)
        except (StorageUnavailable, FileNotFoundError) as exc:
            # Out of sight (not under blobs/) and old uploads are swept: not worth failing for.
            log.warning("could not clean up %s now, the sweep will: %s", self.key, exc)


class _RangeReader(io.RawIOBase):
    """A seekable reader of one object: each read is a ranged GET."""

    def __init__(self, store: "S3Store", key: str, size: int) -> None:
        self.store, self.key, self.size, self.pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        end = min(self.size, self.pos + len(buffer))
        if end <= self.pos:
            return 0
        data = b"".join(self.store.read_range(self.key, self.pos, end - 1))
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


class S3Store(ArtifactStore):
    """Blobs in `bucket` under `prefix`; `cache` (and `tmp_dir`) on this host's disk."""

    def __init__(self, client, bucket: str, prefix: str, cache: BlobCache, *, part_bytes: int = 8 * 1024**2,
                 presign_seconds: int = 0, stale_upload_seconds: float = 24 * 3600.0) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.cache = cache
        self.tmp_dir = cache.tmp_dir
        self.part_bytes = part_bytes
        self.presign_seconds = presign_seconds
        self.stale_upload_seconds = stale_upload_seconds
        self._transfer = TransferConfig(multipart_threshold=part_bytes, multipart_chunksize=part_bytes)

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Store":
        """Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
        AWS_PROFILE, an instance role, ...)."""
        if not settings.s3_bucket:
            raise ValueError("TRAJX_STORAGE_BACKEND=s3 needs TRAJX_S3_BUCKET")
        config = Config(s3={"addressing_style": settings.s3_addressing_style},
                        retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
                        connect_timeout=settings.s3_timeout_seconds, read_timeout=settings.s3_timeout_seconds,
                        max_pool_connections=32)
        client = _session().client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
                                   config=config)
        return cls(client, settings.s3_bucket, settings.s3_prefix,
                   BlobCache(settings.cache_dir, settings.cache_max_bytes), part_bytes=settings.s3_part_bytes,
                   presign_seconds=settings.s3_presign_seconds)

    def key(self, sha256: str) -> str:
        check_sha256(sha256)
        return f"{self.prefix}blobs/{sha256[:2]}/{sha256}"

    def writer(self, max_bytes: int | None = None) -> S3Writer:
        return S3Writer(self, max_bytes)

    def size(self, key: str) -> int:
        """The object's size; FileNotFoundError if absent."""
        with _calls(key):
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]

    def exists(self, sha256: str) -> bool:
        try:
            self.size(self.key(sha256))
        except FileNotFoundError:
            return False
        return True

    def open_key(self, key: str, size: int | None = None) -> BinaryIO:
        size = self.size(key) if size is None else size
        return io.BufferedReader(_RangeReader(self, key, size), buffer_size=READ_CHUNK)

    def open(self, sha256: str) -> BinaryIO:
        return self.open_key(self.key(sha256))

    def read_range(self, key: str, first: int | None = None, last: int | None = None) -> Iterator[bytes]:
        """The object's bytes `first`..`last` (inclusive; all by default), in chunks."""
        extra = {} if first is None else {"Range": f"bytes={first}-{'' if last is None else last}"}
        with _calls(key):
            body = self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
            try:
                yield from body.iter_chunks(READ_CHUNK)
            finally:
                body.close()

    def read_blob(self, sha256: str, first: int | None = None, last: int | None = None) -> Iterator[bytes]:
        return self.read_range(self.key(sha256), first, last)

    def copy_in(self, source_key: str, sha256: str) -> bool:
        """Copy `source_key` to the blob's key unless that exists; returns whether it was new."""
        if self.exists(sha256):
            return False
        with _calls(f"copying {source_key}"):
            self.client.copy({"Bucket": self.bucket, "Key": source_key}, self.bucket, self.key(sha256),
                             Config=self._transfer)
        return True

    def publish(self, path: Path, sha256: str, size: int) -> bool:
        actual = path.stat().st_size
        if actual != size:
            raise ValueError(f"{path} has {actual} bytes, its producer said {size}")
        if self.exists(sha256):
            return False
        with _calls(f"uploading {path.name}"):
            self.client.upload_file(str(path), self.bucket, self.key(sha256), Config=self._transfer)
        return True

    def ensure(self, path: Path, sha256: str) -> None:
        if not self.exists(sha256):
            self.publish(path, sha256, path.stat().st_size)

    def fetch(self, sha256: str, work_dir: Path) -> Path | None:
        return self.cache.checkout(sha256, work_dir / "inputs", self.read_blob)

    def download_url(self, sha256: str, filename: str) -> str | None:
        if self.presign_seconds <= 0:
            return None
        params = {"Bucket": self.bucket, "Key": self.key(sha256),
                  "ResponseContentDisposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}"}
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=self.presign_seconds)

    def _hide(self, sha256: str) -> str | None:
        hidden = f"{self.prefix}removing/{sha256}-{uuid.uuid4().hex}"
        try:
            with _calls(f"hiding {sha256}"):
                self.client.copy_object(Bucket=self.bucket, Key=hidden,
                                        CopySource={"Bucket": self.bucket, "Key": self.key(sha256)})
        except FileNotFoundError:
            return None
        self.delete(sha256)
        return hidden

    def _restore(self, hidden: str, sha256: str) -> None:
        self.copy_in(hidden, sha256)
        self._purge(hidden)

    def _purge(self, hidden: str) -> None:
        with _calls(f"removing {hidden}"):
            self.client.delete_object(Bucket=self.bucket, Key=hidden)

    def delete(self, sha256: str) -> None:
        """Remove the blob whatever references it (tests and repairs; see `remove_unreferenced`)."""
        with _calls(f"deleting {sha256}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    def free_bytes(self) -> None:
        return None  # an object store does not say

    def check_ready(self) -> None:
        try:
            with _calls(f"bucket {self.bucket}"):
                self.client.head_bucket(Bucket=self.bucket)
        except FileNotFoundError:
            raise StorageUnavailable(f"bucket {self.bucket!r} does not exist") from None

    def sweep(self) -> None:
        """Abort multipart uploads and remove staging/removal objects older than
        `stale_upload_seconds` (what killed API processes left; live ones are younger)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.stale_upload_seconds)
        with _calls("listing stale uploads"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}staging/")
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        log.warning("aborted stale multipart upload %s", upload["Key"])
            for folder in ("staging/", "removing/"):
                pages = self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=f"{self.prefix}{folder}")
                for page in pages:
                    for item in page.get("Contents", []):
                        if item["LastModified"] < cutoff:
                            self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
                            log.warning("removed stale object %s", item["Key"])
