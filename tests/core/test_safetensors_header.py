"""Every malformed-safetensors case is refused with 422 `invalid_safetensors`, leaving nothing behind."""

import pickle
import struct

import pytest

from tests.support.files import raw_safetensors, safetensors_bytes
from tests.support.http import stored_files, upload

VALID = safetensors_bytes({"w": ("F32", [4, 2]), "b": ("F32", [4])})
W = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}

MALFORMED = {
    "truncated": VALID[:-5],
    "shorter than the length prefix": b"\x01\x00\x00",
    "header runs past the end": struct.pack("<Q", 1000) + b"{}",
    "oversize header": struct.pack("<Q", 2 * 1024**2) + b"{" + b" " * (2 * 1024**2),
    "bad json": raw_safetensors(None, b"", pad=False)[:8] + b"{not json",
    "header not an object": raw_safetensors([1, 2], b""),
    "unknown dtype": raw_safetensors({"w": {**W, "dtype": "F128"}}, b"\0" * 8),
    "offsets disagree with shape": raw_safetensors({"w": {**W, "data_offsets": [0, 12]}}, b"\0" * 12),
    "overlapping tensors": raw_safetensors({"a": W, "b": {**W, "data_offsets": [4, 12]}}, b"\0" * 12),
    "gap between tensors": raw_safetensors({"a": W, "b": {**W, "data_offsets": [12, 20]}}, b"\0" * 20),
    "trailing bytes": raw_safetensors({"w": W}, b"\0" * 16),
    "negative shape": raw_safetensors({"w": {**W, "shape": [-2]}}, b"\0" * 8),
    "missing field": raw_safetensors({"w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8),
    "bad metadata": raw_safetensors({"__metadata__": {"a": 1}, "w": W}, b"\0" * 8),
    "pickle renamed": pickle.dumps({"w": [1.0, 2.0]}, protocol=2),
    "duplicate tensor": b"",  # filled below: JSON with a repeated key
}
_dup = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
MALFORMED["duplicate tensor"] = struct.pack("<Q", len(_dup)) + _dup + b"\0" * 8


@pytest.fixture
def database_url(sqlite_url) -> str:
    return sqlite_url  # header checks never touch the database: one backend is enough


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_is_refused_and_not_stored(case, api, tenant, store):
    response = upload(api, tenant, MALFORMED[case], name="model.safetensors")
    body = response.json()
    assert response.status_code == 422, (case, body)
    assert body["code"] == "invalid_safetensors" and body["detail"]
    assert response.headers["content-type"] == "application/problem+json"
    assert stored_files(store) == [], "a refused upload left a file behind"
    assert api.get("/v1/artifacts", headers=tenant.headers).json()["data"] == []


def test_header_errors_name_the_tensor(api, tenant):
    response = upload(api, tenant, MALFORMED["unknown dtype"], name="model.safetensors")
    assert response.json()["errors"] == [{"tensor": "w", "message": "tensor 'w' has unknown dtype 'F128'"}]


def test_empty_and_scalar_tensors_and_metadata_are_fine(api, tenant):
    content = raw_safetensors({"__metadata__": {"format": "pt"},
                               "empty": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
                               "scalar": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}}, b"\0" * 8)
    response = upload(api, tenant, content, name="model.safetensors")
    assert response.status_code == 201, response.text
    assert [t["name"] for t in response.json()["tensors"]] == ["empty", "scalar"]
