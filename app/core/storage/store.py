"""The artifact store interface: content-addressed blobs, two backends chosen by settings.

`open_store(settings)` gives a `LocalStore` (a directory, the embedded default) or an
`S3Store` (an S3-compatible object store, for workers on several hosts). Keys and paths
derive from the sha256 only, never from a user string.

No locks. Writes of the same bytes are idempotent, and a blob is removed only through
`remove_unreferenced`, which hides it, asks the database again and puts it back if a
row appeared meanwhile; a writer keeps its own copy of the bytes until its rows have
committed and then republishes the blob if a concurrent removal took it (`settle`).
So no stalled process (a stopped uploader, a hung disk) can block anyone else, and no
committed artifact points at missing bytes:

    writer: publish-if-absent -> commit row -> settle (republish if missing) -> drop own copy
    remover: check refs -> hide blob -> check refs again -> restore or purge

If the remover's second check ran before the writer's row committed, the writer's
settle runs after the hide and puts the bytes back; otherwise the remover sees the row.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Self

from app.core.settings import Settings
from app.core.storage.errors import TooLarge

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
READ_CHUNK = 1024 * 1024

# `check(file, size)` inspects complete content before it enters the store.
Check = Callable[[BinaryIO, int], None]


def check_sha256(sha256: str) -> str:
    """`sha256` if it is a lowercase hex digest; ValueError otherwise (a key is never a user string)."""
    if not _SHA256_HEX.fullmatch(sha256):
        raise ValueError(f"not a lowercase sha256 hex digest: {sha256!r}")
    return sha256


class BlobWriter(ABC):
    """Incremental write of one blob: `write` chunks, `finish`, `commit`, and after the
    caller's rows are committed (or not) `settle`. Leaving the `with` block drops
    whatever was not settled."""

    size: int

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.size = 0

    def _count(self, chunks: tuple[bytes, ...]) -> None:
        self.size += sum(len(chunk) for chunk in chunks)
        if self.max_bytes is not None and self.size > self.max_bytes:
            self.abort()
            raise TooLarge(self.max_bytes)

    @abstractmethod
    def write(self, *chunks: bytes) -> None:
        """Append `chunks` in order; TooLarge (and aborts) past `max_bytes`."""

    @abstractmethod
    def finish(self) -> str:
        """Make the written bytes durable and return their sha256; idempotent."""

    @abstractmethod
    def commit(self, check: Check | None = None) -> bool:
        """Run `check` on the complete content, then publish the blob if absent.

        Returns whether the blob is new to the store. The writer keeps its copy until
        `settle`. If `check` raises, everything is dropped and the exception propagates.
        """

    @abstractmethod
    def settle(self) -> None:
        """After the caller's rows committed: make sure the blob is there (a concurrent
        `remove_unreferenced` may have taken it), then drop the writer's own copy."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written so far (idempotent)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()


class ArtifactStore(ABC):
    """Blobs by sha256; shared by the API (uploads, downloads) and workers (inputs, results).

    `tmp_dir` is this process's local scratch space (job work directories; the local
    backend's partial uploads), swept by `app.core.storage.temp_files`.
    """

    tmp_dir: Path

    @abstractmethod
    def writer(self, max_bytes: int | None = None) -> BlobWriter:
        """Start an incremental write (for async producers such as HTTP bodies)."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """A seekable reader of the blob; FileNotFoundError if it is not stored."""

    @abstractmethod
    def publish(self, path: Path, sha256: str, size: int) -> bool:
        """Publish the local file `path`, whose sha256 and size its producer computed, unless
        these bytes are stored already; `path` stays (see `ensure`). Returns whether new."""

    @abstractmethod
    def ensure(self, path: Path, sha256: str) -> None:
        """`publish` again from `path` if the blob went missing since (a concurrent removal)."""

    @abstractmethod
    def fetch(self, sha256: str, work_dir: Path) -> Path | None:
        """A local file with the blob's bytes for a job working in `work_dir`, valid while
        the job runs; None if the blob is not stored."""

    def read_blob(self, sha256: str, first: int | None = None, last: int | None = None) -> Iterator[bytes]:
        """The blob's bytes `first`..`last` (inclusive; all by default), in chunks;
        FileNotFoundError if it is not stored."""
        with self.open(sha256) as file:
            file.seek(first or 0)
            left = None if last is None else last - (first or 0) + 1
            while left is None or left > 0:
                chunk = file.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
                if not chunk:
                    return
                left = None if left is None else left - len(chunk)
                yield chunk

    def local_path(self, sha256: str) -> Path | None:
        """Where the blob lies on this host's filesystem, if the backend keeps it there."""
        return None

    def download_url(self, sha256: str, filename: str) -> str | None:
        """A short-lived URL the client may fetch the bytes from directly, if configured."""
        return None

    @abstractmethod
    def _hide(self, sha256: str) -> object | None:
        """Move the blob out of sight (a token to restore or purge it); None if absent."""

    @abstractmethod
    def _restore(self, hidden: object, sha256: str) -> None: ...

    @abstractmethod
    def _purge(self, hidden: object) -> None: ...

    def remove_unreferenced(self, sha256: str, referenced: Callable[[], bool]) -> bool:
        """Delete blob `sha256` unless `referenced()` (a fresh look at the database) says a
        live artifact uses it, before or after hiding it. Returns whether it was deleted."""
        if referenced():
            return False
        hidden = self._hide(check_sha256(sha256))
        if hidden is None:
            return False
        if referenced():
            self._restore(hidden, sha256)
            return False
        self._purge(hidden)
        return True

    @abstractmethod
    def free_bytes(self) -> int | None:
        """Free space where uploads are written, if the backend can tell."""

    @abstractmethod
    def check_ready(self) -> None:
        """Raise StorageUnavailable unless the store accepts writes now."""

    def sweep(self) -> None:
        """Remove what dead writers left in the backend (the temp directory is swept apart)."""

    def put_stream(self, chunks: Iterable[bytes], max_bytes: int | None = None,
                   check: Check | None = None) -> tuple[str, int]:
        """Store the concatenated `chunks`; returns (sha256, size). Raises TooLarge."""
        with self.writer(max_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
            sha256 = writer.finish()
            writer.commit(check)
            writer.settle()
            return sha256, writer.size


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings name (`TRAJX_STORAGE_BACKEND`)."""
    if settings.storage_backend == "s3":
        from app.core.storage.s3_store import S3Store  # boto3 only where it is used

        return S3Store.from_settings(settings)
    from app.core.storage.local_store import LocalStore

    return LocalStore(settings.storage_dir)
