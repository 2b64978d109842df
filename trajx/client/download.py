"""Resumable, verified artifact downloads.

Bytes go to `<dest>.part`; an interrupted transfer (this process or an earlier
one) continues from the part file's length with an HTTP Range request. Only a
file whose sha256 equals the artifact's is renamed into place. A destination
that already holds the artifact's bytes (a retried CI step) is not downloaded again.
"""

import os
from pathlib import Path, PurePosixPath

import httpx

from trajx.client.errors import ChecksumMismatch, InvalidLocalInput, ServerUnreachable
from trajx.client.hashing import sha256_file
from trajx.client.progress import ByteCounter, TransferProgress
from trajx.client.transport import Transport


def result_path(out_dir: Path, relative: str) -> Path:
    """Where a result file with manifest path `relative` goes under `out_dir`; a path that
    would leave `out_dir` is refused (the server sent it, but this machine's files are ours)."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise InvalidLocalInput(f"result path {relative!r} would leave the download directory")
    return out_dir.joinpath(*parts)


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download_artifact(transport: Transport, artifact_id: str, sha256: str, size: int, dest: Path,
                      *, progress: TransferProgress | None = None, resume_attempts: int = 3,
                      label: str | None = None) -> Path:
    """Download `artifact_id` to `dest`, resuming a `.part` file; return `dest`. `label`
    names the file to `progress` (default: its file name).

    A resumed transfer that fails verification is started over once from zero (the
    part file may be stale or corrupt). Raises ChecksumMismatch (the part file is
    deleted) when fresh bytes do not hash to `sha256`, ServerUnreachable when the
    transfer keeps breaking, ApiError on 4xx.
    """
    if _holds(dest, sha256, size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    if part.exists() and part.stat().st_size > size:
        part.unlink()  # longer than the artifact: not ours, start over
    counter = ByteCounter(progress, label or dest.name, size)
    resumed = _length(part) > 0
    _fetch(transport, artifact_id, part, size, counter, resume_attempts)
    actual = sha256_file(part)
    if actual != sha256 and resumed:
        part.unlink()
        _fetch(transport, artifact_id, part, size, counter, resume_attempts)
        actual = sha256_file(part)
    if actual != sha256:
        part.unlink()
        raise ChecksumMismatch(f"{artifact_id}: downloaded bytes hash to {actual}, expected {sha256}")
    os.replace(part, dest)
    return dest


def _holds(path: Path, sha256: str, size: int) -> bool:
    """Whether `path` is a file with exactly the artifact's bytes (size checked first: cheap)."""
    return path.is_file() and path.stat().st_size == size and sha256_file(path) == sha256


def _length(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _fetch(transport: Transport, artifact_id: str, part: Path, size: int, counter: ByteCounter,
           resume_attempts: int) -> None:
    """Complete `part`, resuming after dropped connections up to `resume_attempts` times."""
    for attempt in range(resume_attempts + 1):
        try:
            _fetch_rest(transport, artifact_id, part, size, counter)
            return
        except (httpx.TransportError, ServerUnreachable) as exc:
            if attempt == resume_attempts:
                raise ServerUnreachable(f"download of {artifact_id} kept failing: {exc}") from exc


def _fetch_rest(transport: Transport, artifact_id: str, part: Path, size: int, counter: ByteCounter) -> None:
    """Append the artifact's bytes missing from `part` (all of them if Range is ignored)."""
    offset = _length(part)
    if offset == size:
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with transport.stream("GET", f"/v1/artifacts/{artifact_id}/content", headers=headers) as response:
        if offset and response.status_code != 206:
            offset = 0  # the server sent the whole body: start the part file over
        counter.restart(offset)
        with open(part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            for chunk in response.iter_bytes():
                f.write(chunk)
                counter.advance(len(chunk))
