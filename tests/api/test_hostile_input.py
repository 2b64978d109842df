"""Issue 14: hostile input is refused at the edge with a 422 naming the culprit, never a 500,
and no stored row can make a listing fail (both backends)."""

import json
import struct

import pytest

from app.core.persistence.models import Artifact, Job, JobEvent, utcnow
from tests.support.files import mlp_checkpoint, raw_safetensors, safetensors_bytes
from tests.support.http import MLP_CONFIG, transfer_spec, upload, uploaded_id

W = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


def post_json(api, tenant, path: str, document) -> object:
    """POST `document` as JSON text: ASCII escapes carry lone surrogates and NaN through."""
    return api.post(path, content=json.dumps(document), headers={**tenant.headers, "content-type": "application/json"})


def with_config(spec: dict, config) -> dict:
    return {"spec": {**spec, "arch": {"name": "mlp", "config": config}}}


def listings_answer(api, tenant, job_ids=()) -> None:
    for path in ("/v1/artifacts", "/v1/jobs", *(f"/v1/jobs/{j}" for j in job_ids),
                 *(f"/v1/jobs/{j}/events" for j in job_ids)):
        response = api.get(path, headers=tenant.headers)
        assert response.status_code == 200, (path, response.text)


# 1. Lone surrogates and control characters ------------------------------------------------

def test_lone_surrogates_are_refused_naming_the_field(api, tenant):
    spec = transfer_spec(api, tenant)
    header = raw_safetensors({"\ud800": W}, b"\0" * 4)
    by_tensor = upload(api, tenant, header)
    assert by_tensor.status_code == 422 and by_tensor.json()["code"] == "invalid_safetensors"
    assert "surrogate" in by_tensor.json()["detail"]
    cases = [({**MLP_CONFIG, "x": "\ud800"}, "spec.arch.config.x"),
             ({"\udfff": 1}, "spec.arch.config"),
             ({"a": ["ok", "\x07"]}, "spec.arch.config.a[1]")]
    for config, field in cases:
        response = post_json(api, tenant, "/v1/jobs", with_config(spec, config))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field
    named = post_json(api, tenant, "/v1/jobs", {"spec": {**spec, "train_data": "art_\udc00"}})
    assert named.status_code == 422 and named.json()["errors"][0]["field"] == "spec.train_data"
    listings_answer(api, tenant)


def test_a_stored_poisoned_row_cannot_break_a_listing(api, tenant, session_factory):
    """Rows written before these checks (or by a path they miss) still serialize. Only JSON
    columns can hold a lone surrogate: the drivers refuse to encode one into a text column."""
    spec = transfer_spec(api, tenant)
    with session_factory() as session:
        artifact = Artifact(tenant_id=tenant.id, sha256="0" * 64, size=4, name="old.safetensors",
                            format="safetensors", kind="checkpoint",
                            tensors=[{"name": "\ud800w", "dtype": "F32", "shape": [1]}], created_at=utcnow())
        job = Job(tenant_id=tenant.id, kind="transfer", status="failed", created_at=utcnow(),
                  spec={**spec, "arch": {"name": "mlp", "config": {"\ud800": "\udfff"}}},
                  summary={"note": "\ud800"}, result={"targets": [{"last": "\udfff"}]})
        deep = Job(tenant_id=tenant.id, kind="transfer", status="queued", created_at=utcnow(),
                   spec={**spec, "arch": {"name": "mlp", "config": {"a": json.loads("[" * 300 + "]" * 300)}}})
        session.add(deep)
        session.add_all([artifact, job])
        session.flush()
        session.add(JobEvent(job_id=job.id, type="progress", data={"tensor": "\ud800"}, created_at=utcnow()))
        session.commit()
        job_id, artifact_id, deep_id = job.id, artifact.id, deep.id
    listings_answer(api, tenant, [job_id, deep_id])
    shown = api.get(f"/v1/artifacts/{artifact_id}", headers=tenant.headers).json()
    assert shown["tensors"][0]["name"] == "\ufffdw"
    assert api.get(f"/v1/jobs/{job_id}", headers=tenant.headers).json()["summary"] == {"note": "\ufffd"}


# 2. and 6. Malformed safetensors headers, strict integers ---------------------------------

def _header(text: str, buffer: bytes = b"\0" * 4) -> bytes:
    encoded = text.encode()
    return struct.pack("<Q", len(encoded)) + encoded + buffer


HOSTILE_HEADERS = {
    "dtype is a list": raw_safetensors({"w": {**W, "dtype": ["F32"]}}, b"\0" * 4),
    "dtype is an object": raw_safetensors({"w": {**W, "dtype": {"F32": 1}}}, b"\0" * 4),
    "dtype is a number": raw_safetensors({"w": {**W, "dtype": 32}}, b"\0" * 4),
    "thousands of digits in a shape": _header('{"w":{"dtype":"F32","shape":[%s],"data_offsets":[0,4]}}' % ("9" * 5000)),
    "thousands of digits in an offset": _header('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,%s]}}' % ("9" * 5000)),
    # Zero-size, so the byte count matches: only the dimension's own bound refuses them.
    "a dimension beyond 2**64": raw_safetensors({"w": {**W, "shape": [2**64 + 1, 0], "data_offsets": [0, 0]}}, b""),
    "a dimension of 2**53": raw_safetensors({"w": {**W, "shape": [0, 2**53], "data_offsets": [0, 0]}}, b""),
    "a byte size that overflows a float": raw_safetensors({"w": {**W, "shape": [2**52] * 40}}, b"\0" * 4),
    "a shape given as 1.0": raw_safetensors({"w": {**W, "shape": [1.0]}}, b"\0" * 4),
    "a shape given as true": raw_safetensors({"w": {**W, "shape": [True]}}, b"\0" * 4),
    "NaN in a shape": _header('{"w":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}'),
    "an empty tensor name": raw_safetensors({"": W}, b"\0" * 4),
}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_hostile_safetensors_headers_are_refused(api, tenant, case):
    response = upload(api, tenant, HOSTILE_HEADERS[case])
    assert response.status_code == 422 and response.json()["code"] == "invalid_safetensors", response.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_json_artifact_that_is_a_huge_number_is_refused(api, tenant):
    response = upload(api, tenant, b"9" * 5000, name="report.json")
    assert response.status_code == 422 and response.json()["code"] == "invalid_json"


def test_integer_fields_take_only_integers_and_numbers_are_finite(api, tenant):
    spec = transfer_spec(api, tenant)
    for steps in ("10", 10.0, True):
        response = post_json(api, tenant, "/v1/jobs", {"spec": {**spec, "params": {"steps": steps}}})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "spec.params.steps", steps
    for value in (float("nan"), float("inf")):
        response = post_json(api, tenant, "/v1/jobs", with_config(spec, {**MLP_CONFIG, "x": value}))
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "spec.arch.config.x"
    huge = post_json(api, tenant, "/v1/jobs", with_config(spec, {**MLP_CONFIG, "x": 2**70}))
    assert huge.status_code == 422 and huge.json()["errors"][0]["field"] == "spec.arch.config.x"
    tol = post_json(api, tenant, "/v1/jobs", {"spec": {**spec, "params": {"matching": {"tol": "1e-3"}}}})
    assert tol.status_code == 422


# 3. Deep nesting ----------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [40, 300])
def test_deeply_nested_json_is_refused_with_422(api, tenant, depth):
    spec = transfer_spec(api, tenant)
    body = json.dumps(with_config(spec, {}))
    nested = body.replace('"config": {}', '"config": {"a": ' + "[" * depth + "]" * depth + "}")
    response = api.post("/v1/jobs", content=nested, headers={**tenant.headers, "content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"].startswith("spec.arch.config.a")
    assert "nested deeper than 32 levels" in response.json()["detail"]
    listings_answer(api, tenant)


# 4. Zoo configs are bounded and checked by the API -----------------------------------------

@pytest.mark.parametrize("arch, config, field", [
    ("mlp", {**MLP_CONFIG, "hidden": [-1]}, "spec.arch.config.hidden[0]"),
    ("mlp", {**MLP_CONFIG, "hidden": [2**40]}, "spec.arch.config.hidden[0]"),
    ("mlp", {**MLP_CONFIG, "hidden": ["16"]}, "spec.arch.config.hidden[0]"),
    ("cnn", {"channels": [0, 8], "image_size": 8}, "spec.arch.config.channels[0]"),
    ("cnn", {"channels": [8, 8], "image_size": 8, "width": 0.01}, "spec.arch.config"),
    ("transformer", {"d_model": 4, "num_heads": 1, "mlp_ratio": 0.01}, "spec.arch.config"),
    ("resnet", {"width": 0.01}, "spec.arch.config"),
    ("hf", {"model_type": "gpt2"}, "spec.arch.config.task"),
    ("hf", {"task": "causal-lm", "model_type": ""}, "spec.arch.config.model_type"),
])
def test_zoo_configs_are_bounded_at_submit(api, tenant, arch, config, field):
    spec = transfer_spec(api, tenant)
    response = post_json(api, tenant, "/v1/jobs", {"spec": {**spec, "arch": {"name": arch, "config": config}}})
    assert response.status_code == 422 and response.json()["code"] == "invalid_config", response.text
    assert response.json()["errors"][0]["field"] == field


# 7. Bounded work per request ----------------------------------------------------------------

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tensor_count_and_name_length_are_capped(api, tenant):
    many = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(10_001)}
    response = upload(api, tenant, raw_safetensors(many, b""))
    assert response.status_code == 422 and "limit is 10000" in response.json()["detail"]
    long = upload(api, tenant, raw_safetensors({"w" * 1025: W}, b"\0" * 4))
    assert long.status_code == 422 and "limit is 1024" in long.json()["detail"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_responses_summarise_the_tensor_table_and_page_through_it(api, tenant):
    tensors = {f"t{i:04d}": ("F32", [1]) for i in range(250)}
    created = upload(api, tenant, safetensors_bytes(tensors))
    assert created.status_code == 201
    body = created.json()
    assert body["tensor_count"] == 250 and len(body["tensors"]) == 100 and body["tensors"][0]["name"] == "t0000"
    listed = api.get("/v1/artifacts", headers=tenant.headers).json()["data"][0]
    assert (listed["tensor_count"], len(listed["tensors"])) == (250, 100)
    names, offset = [], 0
    while offset is not None:
        page = api.get(f"/v1/artifacts/{body['id']}/tensors", params={"offset": offset, "limit": 100},
                       headers=tenant.headers).json()
        names += [t["name"] for t in page["data"]]
        offset = page["next_offset"]
    assert names == sorted(tensors)


def test_a_spec_naming_one_checkpoint_many_times_is_checked_once_per_artifact(api, tenant):
    spec = transfer_spec(api, tenant)
    other = uploaded_id(api, tenant, mlp_checkpoint(hidden=8))
    ok = post_json(api, tenant, "/v1/jobs", {"spec": {**spec, "source": [spec["source"][0]] * 1000}})
    assert ok.status_code == 202, ok.text
    mismatch = post_json(api, tenant, "/v1/jobs", {"spec": {**spec, "source": [spec["source"][0]] * 999 + [other]}})
    assert mismatch.status_code == 422 and mismatch.json()["code"] == "checkpoint_mismatch"
    assert mismatch.json()["errors"][0]["field"] == "spec.source[999]"
