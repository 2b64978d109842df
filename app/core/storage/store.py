"""Content-addressed artifact store on a local (or shared, mounted) directory.

Blobs live at `<root>/ab/cd/<sha256>`: the path is derived from the hash only,
never from a user string. Writes go to `<root>/tmp/` first and are fsynced and
renamed into place, so a crash or an aborted upload never leaves a partial blob
(what a crash leaves in `tmp/` is swept: `app.core.storage.temp_files`); identical bytes are stored once.
"""

import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, Self

from app.core.storage.temp_files import hold

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
COPY_CHUNK = 1024 * 1024
WRITEBACK_BYTES = 32 * 1024 * 1024


class TooLarge(Exception):
    """The stream went past the store's `max_bytes` (nothing was kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"content exceeds the limit of {limit} bytes")
        self.limit = limit


class BlobWriter:
    """Incremental write of one blob: `write` chunks, then `commit` or `abort`.

    Use as a context manager; leaving the block without `commit` removes the temp file.
    """

    def __init__(self, store: "ArtifactStore", max_bytes: int | None) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self.temp_path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        # Held until commit or abort, so a sweep never takes a live upload for a crash's leftover.
        self._held: int | None = hold(self.temp_path)
        self._flushed_to = 0

    def write(self, *chunks: bytes) -> None:
        """Append `chunks` in order; raises TooLarge (and aborts) past `max_bytes`."""
        self.size += sum(len(chunk) for chunk in chunks)
        if self._max_bytes is not None and self.size > self._max_bytes:
            self.abort()
            raise TooLarge(self._max_bytes)
        for chunk in chunks:
            self._hash.update(chunk)
        self._file.writelines(chunks)
        if self.size - self._flushed_to >= WRITEBACK_BYTES:
            self._start_writeback()

    def _start_writeback(self) -> None:
        # Big uploads would otherwise sit in the page cache until commit's fsync and then
        # wait for all of it at once; asking the kernel to write back (and drop) what is
        # written so far overlaps the disk with the rest of the transfer.
        self._file.flush()
        os.posix_fadvise(self._file.fileno(), self._flushed_to, self.size - self._flushed_to,
                         os.POSIX_FADV_DONTNEED)
        self._flushed_to = self.size

    def finish(self) -> str:
        """Make the written bytes durable (fsync) and return their sha256; idempotent."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        return self._hash.hexdigest()

    def commit(self, check: Callable[[Path], None] | None = None) -> tuple[str, int]:
        """Make the blob durable and visible; returns (sha256, size).

        `check(temp_path)` runs on the complete file before it enters the store; if it
        raises, the temp file is removed and the exception propagates.
        """
        self.finish()
        try:
            if check is not None:
                check(self.temp_path)
            sha256 = self._hash.hexdigest()
            final = self._store.path(sha256)
            if final.exists():
                self.temp_path.unlink()  # dedup: these bytes are already stored
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.temp_path, final)
                _fsync_dir(final.parent)
        except BaseException:
            self.temp_path.unlink(missing_ok=True)
            raise
        finally:
            self._release()
        return sha256, self.size

    def abort(self) -> None:
        """Drop everything written so far (idempotent)."""
        if not self._file.closed:
            self._file.close()
        self.temp_path.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            os.close(held)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.temp_path.exists():
            self.abort()


class ArtifactStore:
    """Blob store rooted at `root`; shared by the API (uploads) and workers (inputs, results)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.lock_dir = self.root / "locks"
        self.lock_dir.mkdir(exist_ok=True)

    @contextmanager
    def lock(self, sha256: str) -> Iterator[None]:
        """Hold an exclusive lock on blob `sha256` across threads and processes of this host.

        An upload holds it from publishing the blob until its artifact row commits, a
        delete from its reference check until the unlink, so a delete can never remove
        bytes that a concurrent upload of the same content has just recorded.
        (One flock file per first hash byte: 256 files, locks shared by their blobs.)
        """
        with self.locks([sha256]):
            yield

    @contextmanager
    def locks(self, hashes: Iterable[str]) -> Iterator[None]:
        """Hold the locks of all blobs `hashes` at once (each lock file once, in one order:
        two holders of overlapping sets cannot deadlock)."""
        names = sorted({self.path(sha256).name[:2] for sha256 in hashes})  # validates each hash
        with ExitStack() as stack:
            for name in names:
                handle = stack.enter_context(open(self.lock_dir / f"{name}.lock", "a+b"))
                fcntl.flock(handle, fcntl.LOCK_EX)
                stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
            yield

    def writer(self, max_bytes: int | None = None) -> BlobWriter:
        """Start an incremental write (for async producers such as HTTP bodies)."""
        return BlobWriter(self, max_bytes)

    def put_stream(self, chunks: Iterable[bytes], max_bytes: int | None = None,
                   check: Callable[[Path], None] | None = None) -> tuple[str, int]:
        """Store the concatenated `chunks`; returns (sha256, size). Raises TooLarge."""
        with self.writer(max_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit(check)

    def put_file(self, path: Path | str, check: Callable[[Path], None] | None = None) -> tuple[str, int]:
        """Copy a local file into the store; returns (sha256, size)."""
        with open(path, "rb") as source:
            return self.put_stream(iter(lambda: source.read(COPY_CHUNK), b""), check=check)

    def adopt(self, path: Path, sha256: str, size: int) -> bool:
        """Move the file `path`, whose sha256 and size its producer computed, into the store.

        A rename, not a copy (`path` must be on the store's filesystem, e.g. under
        `tmp_dir`), and no re-hash. Returns True when the blob is new, False when these
        bytes were already stored (then `path` is removed). Call under the blob's lock.
        """
        actual = path.stat().st_size
        if actual != size:
            raise ValueError(f"{path} has {actual} bytes, its producer said {size}")
        final = self.path(sha256)
        if final.exists():
            path.unlink()
            return False
        with open(path, "rb") as file:
            os.fsync(file.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, final)
        _fsync_dir(final.parent)
        return True

    def path(self, sha256: str) -> Path:
        """Where the blob `sha256` lives (whether or not it exists). ValueError on a non-hash."""
        if not _SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"not a lowercase sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        """Open the blob for reading; FileNotFoundError if it is not stored."""
        return open(self.path(sha256), "rb")

    def delete(self, sha256: str) -> None:
        """Remove the blob if present. Callers check that no artifact still references it."""
        self.path(sha256).unlink(missing_ok=True)

    def is_writable(self) -> bool:
        """Readiness probe: the temp directory accepts a file."""
        try:
            with tempfile.TemporaryFile(dir=self.tmp_dir):
                return True
        except OSError:
            return False


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
