"""Streaming sha256 of files, in constant memory."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

CHUNK_SIZE = 1 << 20


def iter_file(path: Path, start: int = 0, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the bytes of `path` from offset `start` in chunks."""
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(chunk_size):
            yield chunk


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in iter_file(path):
        digest.update(chunk)
    return digest.hexdigest()
