"""The local backend: blobs in a directory (the embedded default, or one host's volume).

Blobs live at `<root>/ab/cd/<sha256>`. Writes go to `<root>/tmp/` first, are fsynced
and hard-linked into place, so a crash or an aborted upload never leaves a partial blob
(what a crash leaves in `tmp/` is swept: `app.core.storage.temp_files`); identical
bytes are stored once. The writer's own link stays until `settle` (see `store`).
"""

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from app.core.storage.errors import StorageUnavailable, disk_errors
from app.core.storage.store import ArtifactStore, BlobWriter, Check, check_sha256
from app.core.storage.temp_files import hold

WRITEBACK_BYTES = 32 * 1024 * 1024


class LocalWriter(BlobWriter):
    """A temp file in the store's `tmp/`, held (see `temp_files.hold`) until settled or aborted."""

    def __init__(self, store: "LocalStore", max_bytes: int | None) -> None:
        super().__init__(max_bytes)
        self._store = store
        self._hash = hashlib.sha256()
        with disk_errors(store.root):
            fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self.temp_path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        # Held until settled or aborted, so a sweep never takes a live upload for a crash's leftover.
        self._held: int | None = hold(self.temp_path)
        self._flushed_to = 0
        self._sha256: str | None = None

    def write(self, *chunks: bytes) -> None:
        self._count(chunks)
        for chunk in chunks:
            self._hash.update(chunk)
        with self._dropped_on_error():
            self._file.writelines(chunks)
            if self.size - self._flushed_to >= WRITEBACK_BYTES:
                self._start_writeback()

    @contextmanager
    def _dropped_on_error(self) -> Iterator[None]:
        """Drop the file on any error; a full disk becomes StorageFull."""
        try:
            with disk_errors(self._store.root):
                yield
        except BaseException:
            self.abort()
            raise

    def _start_writeback(self) -> None:
        # Big uploads would otherwise sit in the page cache until commit's fsync and then
        # wait for all of it at once; asking the kernel to write back (and drop) what is
        # written so far overlaps the disk with the rest of the transfer.
        self._file.flush()
        os.posix_fadvise(self._file.fileno(), self._flushed_to, self.size - self._flushed_to,
                         os.POSIX_FADV_DONTNEED)
        self._flushed_to = self.size

    def finish(self) -> str:
        if not self._file.closed:
            with self._dropped_on_error():
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            self._sha256 = self._hash.hexdigest()
        return self._sha256 or self._hash.hexdigest()

    def commit(self, check: Check | None = None) -> bool:
        sha256 = self.finish()
        with self._dropped_on_error():
            if check is not None:
                with open(self.temp_path, "rb") as file:
                    check(file, self.size)
            return self._store.publish(self.temp_path, sha256, self.size)

    def settle(self) -> None:
        if self._sha256 is not None and self.temp_path.exists():
            self._store.ensure(self.temp_path, self._sha256)
        self.abort()

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.temp_path.unlink(missing_ok=True)
        held, self._held = self._held, None
        if held is not None:
            os.close(held)


class LocalStore(ArtifactStore):
    """Blob store rooted at `root`, on a filesystem the API and its workers share."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def writer(self, max_bytes: int | None = None) -> LocalWriter:
        return LocalWriter(self, max_bytes)

    def path(self, sha256: str) -> Path:
        """Where the blob `sha256` lives (whether or not it exists). ValueError on a non-hash."""
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    local_path = path

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        return open(self.path(sha256), "rb")

    def publish(self, path: Path, sha256: str, size: int) -> bool:
        """A hard link, not a copy (`path` must be on the store's filesystem, e.g. under
        `tmp_dir`), and no re-hash."""
        actual = path.stat().st_size
        if actual != size:
            raise ValueError(f"{path} has {actual} bytes, its producer said {size}")
        final = self.path(sha256)
        if final.exists():
            return False
        with disk_errors(self.root):
            with open(path, "rb") as file:
                os.fsync(file.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, final)
            except FileExistsError:
                return False  # a concurrent writer of the same bytes won
            _fsync_dir(final.parent)
        return True

    def ensure(self, path: Path, sha256: str) -> None:
        if not self.path(sha256).exists():
            self.publish(path, sha256, path.stat().st_size)

    def fetch(self, sha256: str, work_dir: Path) -> Path | None:
        # Read in place: a blob is not removed while a live job uses its artifact.
        path = self.path(sha256)
        return path if path.is_file() else None

    def _hide(self, sha256: str) -> tuple[Path, int] | None:
        # Into tmp/, held so the sweep leaves it alone until restored or purged.
        trash = self.tmp_dir / f"removing-{sha256}-{uuid.uuid4().hex}"
        try:
            os.rename(self.path(sha256), trash)
        except FileNotFoundError:
            return None
        return trash, hold(trash)

    def _restore(self, hidden: tuple[Path, int], sha256: str) -> None:
        trash, _ = hidden
        self.publish(trash, sha256, trash.stat().st_size)
        self._purge(hidden)

    def _purge(self, hidden: tuple[Path, int]) -> None:
        trash, held = hidden
        trash.unlink(missing_ok=True)
        os.close(held)

    def delete(self, sha256: str) -> None:
        """Remove the blob whatever references it (tests and repairs; see `remove_unreferenced`)."""
        self.path(sha256).unlink(missing_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def check_ready(self) -> None:
        try:
            with tempfile.TemporaryFile(dir=self.tmp_dir):
                return
        except OSError as exc:
            raise StorageUnavailable(f"artifact store {self.root} is not writable: {exc.strerror}") from None


def _fsync_dir(directory: Path) -> None:
    # The link is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
