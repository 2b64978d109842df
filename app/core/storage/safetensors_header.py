"""Validate a safetensors file from its header alone, never loading a tensor.

Layout: 8 bytes little-endian header length N, N bytes of JSON
`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`,
then the data buffer. Like the reference loader we require the tensors to tile
the buffer exactly: sorted by offset, no gap, no overlap, ending at the file's end.
"""

import json
import struct
from typing import Any, BinaryIO

from app.core.validation.text import text_fault
from trajx.errors import InvalidInput

# dtype -> bits per element (the sub-byte float formats pack several per byte).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
MAX_RANK = 64
# Dimensions and offsets stay below 2**53, exact in every JSON parser; a header may
# write no integer longer than that (Python would parse thousands of digits slowly).
MAX_INDEX = 2**53 - 1
MAX_INT_DIGITS = len(str(MAX_INDEX))
DEFAULT_MAX_TENSORS = 10_000
DEFAULT_MAX_NAME_LENGTH = 1024


def invalid(message: str, **details: Any) -> InvalidInput:
    return InvalidInput(message, code="invalid_safetensors", **details)


def looks_like_safetensors(prefix: bytes) -> bool:
    """A cheap sniff on the first 9+ bytes: a plausible length followed by '{'."""
    if len(prefix) < 9:
        return False
    (length,) = struct.unpack("<Q", prefix[:8])
    return length >= 2 and prefix[8:9] == b"{"


def read_tensor_table(file: BinaryIO, file_size: int, max_header_bytes: int, *,
                      max_tensors: int = DEFAULT_MAX_TENSORS,
                      max_name_length: int = DEFAULT_MAX_NAME_LENGTH) -> list[dict[str, Any]]:
    """Return `[{name, dtype, shape}]` in file order; InvalidInput(`invalid_safetensors`) if malformed,
    or if it has more than `max_tensors` tensors or a name longer than `max_name_length`."""
    if file_size < 8:
        raise invalid(f"file is {file_size} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", file.read(8))
    if header_len > max_header_bytes:
        raise invalid(f"header length {header_len} exceeds the limit of {max_header_bytes} bytes")
    if 8 + header_len > file_size:
        raise invalid(f"header length {header_len} runs past the end of the {file_size}-byte file")
    header = _parse_json(file.read(header_len))
    buffer_size = file_size - 8 - header_len
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise invalid("__metadata__ must be an object of string values", field="__metadata__")
    if len(header) > max_tensors:
        raise invalid(f"the header lists {len(header)} tensors; the limit is {max_tensors} per file")
    for name in header:
        _check_name(name, max_name_length)
    entries = sorted((_entry(name, info) for name, info in header.items()), key=lambda e: e["offsets"])
    position = 0
    for entry in entries:
        begin, end = entry["offsets"]
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise invalid(f"tensor {entry['name']!r} starts at {begin}, which {what} (expected {position})",
                          tensor=entry["name"])
        position = end
    if position != buffer_size:
        raise invalid(f"tensors cover {position} bytes but the data buffer holds {buffer_size}")
    return [{"name": e["name"], "dtype": e["dtype"], "shape": e["shape"]} for e in entries]


def _parse_json(raw: bytes) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            duplicate = next(k for k in keys if keys.count(k) > 1)
            raise invalid(f"header names tensor {duplicate!r} twice", tensor=duplicate)
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates,
                            parse_int=_bounded_int, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise invalid(f"header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise invalid("header must be a JSON object")
    return header


def _bounded_int(text: str) -> int:
    """`json.loads` hook: an integer of at most MAX_INT_DIGITS digits (ValueError beyond)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} characters is out of range")
    return int(text)


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _check_name(name: str, max_length: int) -> None:
    fault = "is empty" if not name else text_fault(name)
    if fault is None and len(name) > max_length:
        fault = f"is {len(name)} characters long; the limit is {max_length}"
    if fault is not None:
        shown = name[:60].encode("utf-8", "backslashreplace").decode()  # a surrogate cannot go out as is
        raise invalid(f"tensor name {name[:60]!r} {fault}", tensor=shown)


def _entry(name: str, info: Any) -> dict[str, Any]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise invalid(f"tensor {name!r} must have exactly dtype, shape and data_offsets", tensor=name)
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not (isinstance(dtype, str) and dtype in DTYPE_BITS):
        raise invalid(f"tensor {name!r} has unknown dtype {dtype!r}", tensor=name)
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK and all(_is_count(d) for d in shape)):
        raise invalid(f"tensor {name!r} has an invalid shape {shape!r}", tensor=name)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise invalid(f"tensor {name!r} has invalid data_offsets {offsets!r}", tensor=name)
    bits = _bits(shape, DTYPE_BITS[dtype])
    if bits is None or bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        needs = "more than 2**53" if bits is None else f"{bits / 8:g}"
        raise invalid(f"tensor {name!r}: {dtype} {shape} needs {needs} bytes but data_offsets "
                      f"{offsets} span {offsets[1] - offsets[0]}", tensor=name)
    return {"name": name, "dtype": dtype, "shape": shape, "offsets": tuple(offsets)}


def _bits(shape: list[int], bits_per_element: int) -> int | None:
    """Bits the tensor needs, or None past MAX_INDEX bytes (stops early: no huge products)."""
    bits = bits_per_element
    for size in shape:
        bits *= size
        if bits > 8 * MAX_INDEX:
            return None
    return bits


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INDEX
