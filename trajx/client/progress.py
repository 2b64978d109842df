"""Byte progress of uploads and downloads, reported through an optional callback.

The client draws nothing itself (it needs only httpx and tenacity): it calls
`progress(description, done_bytes, total_bytes)` as bytes move, and the CLI turns
those calls into a progress bar on stderr.
"""

from collections.abc import Callable

TransferProgress = Callable[[str, int, int], None]


class ByteCounter:
    """Counts one file's bytes and reports the running total to `progress`, if any."""

    def __init__(self, progress: TransferProgress | None, description: str, total: int) -> None:
        self.progress = progress
        self.description = description
        self.total = total
        self.done = 0

    def restart(self, done: int) -> None:
        """Continue from `done` bytes (0 when a transfer starts over, the part length on resume)."""
        self.done = done
        self._report()

    def advance(self, n_bytes: int) -> None:
        self.done += n_bytes
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.description, self.done, self.total)
