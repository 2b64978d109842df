"""A worker host's local cache of blobs from a remote store: bounded, LRU, sha256-verified.

Blobs live at `<root>/blobs/ab/<sha256>`; a download goes to `<root>/tmp/` (held while
it runs, see `temp_files`), is hashed on the way and renamed into place only if its
sha256 matches. Jobs never read the cache in place: `checkout` hard-links the blob into
the job's work directory, so an eviction by another worker on this host (several may
share one cache) never pulls a file from under a running job. The least recently used
blobs (by mtime, touched on every hit) go first once the cache is over its size.
No torch here.
"""

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from app.core.storage.errors import StorageUnavailable, disk_errors
from app.core.storage.temp_files import hold

log = logging.getLogger(__name__)
# Another worker may evict a blob between our hit and our link: try again this often.
CHECKOUT_TRIES = 3

# `read(sha256)` yields the blob's bytes; FileNotFoundError if the store lacks it.
Read = Callable[[str], Iterator[bytes]]


class BlobCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.blobs = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.max_bytes = max_bytes
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def checkout(self, sha256: str, dest_dir: Path, read: Read) -> Path | None:
        """A hard link in `dest_dir` (on the cache's filesystem) to the blob's verified
        bytes, downloaded through `read` on a miss; None if the store lacks the blob."""
        target = dest_dir / sha256
        if target.exists():
            return target
        dest_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(CHECKOUT_TRIES):
            cached = self._hit(sha256)
            if cached is None:
                try:
                    cached = self._download(sha256, read)
                except FileNotFoundError:
                    return None
            try:
                os.link(cached, target)
                return target
            except FileNotFoundError:
                continue  # evicted by another worker in between
        raise StorageUnavailable(f"blob {sha256} kept leaving the cache {self.blobs} (too small?)")

    def _hit(self, sha256: str) -> Path | None:
        path = self.path(sha256)
        try:
            os.utime(path)  # most recently used
        except FileNotFoundError:
            return None
        return path

    def _download(self, sha256: str, read: Read) -> Path:
        with disk_errors(self.tmp_dir):
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="download-")
        temp = Path(name)
        held = hold(temp)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as file, disk_errors(self.tmp_dir):
                for chunk in read(sha256):
                    digest.update(chunk)
                    file.write(chunk)
            if digest.hexdigest() != sha256:
                raise StorageUnavailable(f"blob {sha256} arrived with sha256 {digest.hexdigest()}; not cached")
            final = self.path(sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)  # a concurrent download of the same bytes is just as good
        finally:
            temp.unlink(missing_ok=True)
            os.close(held)
        self._evict(keep=final)
        return final

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used blobs until the cache fits `max_bytes`."""
        entries = []
        for path in self.blobs.glob("??/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size
        if total > self.max_bytes:
            log.warning("blob cache %s holds %d bytes, over its %d-byte bound (one blob is larger)",
                        self.blobs, total, self.max_bytes)
