"""Build safetensors bytes without torch: checkpoints, data shards, malformed files."""

import json
import struct

import numpy as np

DTYPES = {"F32": np.float32, "I64": np.int64, "F16": np.float16}


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None,
                      fill: int = 0) -> bytes:
    """A valid safetensors file: name -> (dtype, shape), data filled with `fill`-seeded values."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    buffers, offset = [], 0
    rng = np.random.default_rng(fill)
    for name, (dtype, shape) in tensors.items():
        data = rng.standard_normal(shape).astype(DTYPES[dtype]).tobytes() if dtype != "I64" \
            else rng.integers(0, 10, shape).astype(np.int64).tobytes()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        buffers.append(data)
        offset += len(data)
    return raw_safetensors(header, b"".join(buffers))


def raw_safetensors(header: object, buffer: bytes, pad: bool = True) -> bytes:
    """Serialize any header object (valid or not) followed by `buffer`."""
    encoded = json.dumps(header).encode()
    if pad:
        encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + buffer


def mlp_checkpoint(hidden: int = 16, fill: int = 0) -> bytes:
    return safetensors_bytes({"0.weight": ("F32", [hidden, 8]), "0.bias": ("F32", [hidden]),
                              "2.weight": ("F32", [3, hidden]), "2.bias": ("F32", [3])}, fill=fill)


def data_shard(examples: int = 32, features: int = 8) -> bytes:
    return safetensors_bytes({"inputs": ("F32", [examples, features]), "targets": ("I64", [examples])})
