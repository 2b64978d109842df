"""The artifact store's errors, for the HTTP edge (507, 503) and the worker (retry or fail).

Both backends raise these instead of `OSError` or a client library's exceptions, so
callers need not know which backend they talk to. No torch here.
"""

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from trajx.errors import TrajxError

# What a 503 tells clients to wait: an object store or a disk coming back takes seconds.
RETRY_AFTER_SECONDS = 5
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class StorageFull(TrajxError):
    """The store has no room for these bytes (a full disk or bucket quota); nothing was kept.

    The API answers 507 `storage_full`; a job that hits it while storing results is handed
    back with a `storage_full` event and tried again later (worker/runner.py)."""

    code = "storage_full"


class StorageUnavailable(TrajxError):
    """The store cannot be reached (object store down, timeouts); worth retrying later.

    The API answers 503 `storage_unavailable` with `Retry-After`; workers retry."""

    code = "storage_unavailable"
    retry_after = RETRY_AFTER_SECONDS


class TooLarge(Exception):
    """The stream went past the store's `max_bytes` (nothing was kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"content exceeds the limit of {limit} bytes")
        self.limit = limit


@contextmanager
def disk_errors(where: object) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) under the block into StorageFull naming `where`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            raise StorageFull(f"no space left in {where}: {exc.strerror}") from exc
        raise
