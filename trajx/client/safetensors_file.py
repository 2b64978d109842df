"""Rename and merge safetensors files without torch: headers are JSON, data is bytes.

A safetensors file is an 8-byte little-endian header length, a JSON header
(`name -> {dtype, shape, data_offsets}` plus an optional `__metadata__`), then the
tensors' bytes. Renaming tensors rewrites the header only; merging shards shifts
each shard's offsets by the bytes already written. Data is copied in chunks, so
memory stays constant whatever the checkpoint's size.
"""

import json
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from trajx.client.errors import InvalidLocalInput

_HEADER_CAP = 100 * 1024 * 1024  # the format's own limit on a header
_METADATA = "__metadata__"


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header of `path` (tensors and `__metadata__`) and the offset where its data starts."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise InvalidLocalInput(f"{path}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", prefix)
        if length > _HEADER_CAP:
            raise InvalidLocalInput(f"{path}: not a safetensors file (header of {length} bytes)")
        try:
            header = json.loads(f.read(length))
        except ValueError as exc:
            raise InvalidLocalInput(f"{path}: not a safetensors file (header is not JSON: {exc})") from exc
    if not isinstance(header, dict):
        raise InvalidLocalInput(f"{path}: not a safetensors file (header is not an object)")
    return header, 8 + length


def tensor_names(path: Path) -> list[str]:
    header, _ = read_header(path)
    return [name for name in header if name != _METADATA]


def write_renamed(src: Path, dest: Path, rename: Mapping[str, str]) -> Path:
    """Copy `src` to `dest` with tensors renamed by `rename` (names not in it keep theirs)."""
    header, data_start = read_header(src)
    renamed = {rename.get(name, name): entry for name, entry in header.items()}
    if len(renamed) != len(header):
        raise InvalidLocalInput(f"{src}: renaming would give two tensors the same name")
    with open(src, "rb") as source, open(dest, "wb") as out:
        _write_header(out, renamed)
        source.seek(data_start)
        shutil.copyfileobj(source, out)
    return dest


def merge_shards(index_path: Path, dest: Path) -> Path:
    """One safetensors file from a Hugging Face sharded checkpoint's `*.index.json`.

    Every tensor the index's `weight_map` names must be in the shard it points to,
    and no shard may hold a tensor the index does not name.
    """
    weight_map = _weight_map(index_path)
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    merged: dict[str, Any] = {}
    sources: list[tuple[Path, int, int]] = []  # shard file, data start, data length
    written = 0
    for shard, names in sorted(shards.items()):
        shard_path = index_path.parent / shard
        if Path(shard).name != shard or not shard_path.is_file():
            raise InvalidLocalInput(f"{index_path}: shard {shard!r} is not a file next to the index")
        header, data_start = read_header(shard_path)
        present = {n for n in header if n != _METADATA}
        if present != set(names):
            missing, extra = sorted(set(names) - present), sorted(present - set(names))
            raise InvalidLocalInput(f"{shard_path}: does not match the index; "
                                    f"missing: {missing[:5] or 'none'}; not in the index: {extra[:5] or 'none'}")
        length = max((header[n]["data_offsets"][1] for n in names), default=0)
        for name in names:
            begin, end = header[name]["data_offsets"]
            merged[name] = {**header[name], "data_offsets": [begin + written, end + written]}
        sources.append((shard_path, data_start, length))
        written += length
    with open(dest, "wb") as out:
        _write_header(out, merged)
        for shard_path, data_start, length in sources:
            with open(shard_path, "rb") as source:
                source.seek(data_start)
                _copy_exactly(source, out, length, shard_path)
    return dest


def is_shard_index(path: Path) -> bool:
    return path.name.endswith(".safetensors.index.json")


def _weight_map(index_path: Path) -> dict[str, str]:
    try:
        index = json.loads(index_path.read_text())
    except ValueError as exc:
        raise InvalidLocalInput(f"{index_path}: not a JSON document: {exc}") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise InvalidLocalInput(f"{index_path}: needs a non-empty 'weight_map' of tensor name -> shard file")
    return weight_map


def _write_header(out: BinaryIO, header: dict[str, Any]) -> None:
    # Tensor entries sorted by name and padded to 8 bytes, as safetensors itself writes them.
    ordered = {name: header[name] for name in sorted(header)}
    encoded = json.dumps(ordered, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    out.write(struct.pack("<Q", len(encoded)))
    out.write(encoded)


def _copy_exactly(source: BinaryIO, out: BinaryIO, length: int, what: Path,
                  chunk: int = 1 << 20) -> None:
    remaining = length
    while remaining:
        block = source.read(min(chunk, remaining))
        if not block:
            raise InvalidLocalInput(f"{what}: truncated (data ends before its header says)")
        out.write(block)
        remaining -= len(block)

