"""Programs on the service: the API classifies, refuses and references them without torch."""

import copy
import json
import pickle

import pytest
import torch
from torch import nn

from tests.support.http import transfer_spec, upload
from trajx.program.build import export_program


@pytest.fixture(scope="module")
def program_bytes() -> bytes:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    return json.dumps(export_program(model, (torch.randn(2, 8),))).encode()


def test_an_uploaded_program_is_a_program_artifact_a_job_can_name(api, tenant, program_bytes):
    program = upload(api, tenant, program_bytes, "program.json")
    assert program.status_code == 201, program.text
    assert program.json()["kind"] == "program"

    spec = transfer_spec(api, tenant, arch={"program": program.json()["id"]},
                         targets=[{"checkpoint": transfer_spec(api, tenant)["source"][0]}])
    created = api.post("/v1/jobs", json={"spec": spec}, headers=tenant.headers)
    assert created.status_code == 202, created.text
    assert created.json()["spec"]["arch"] == {"program": program.json()["id"], "config": {}, "name": None}


@pytest.mark.parametrize("target, code, named", [
    ("torch.ops.aten.topk.default", "unsupported_op", "aten.topk.default"),
    ("builtins.exec", "unsupported_op", "builtins.exec"),
])
def test_a_program_with_an_operator_outside_the_table_is_refused_at_upload(
        api, tenant, program_bytes, target, code, named):
    document = json.loads(program_bytes)
    document["graphs"]["eval"]["graph_module"]["graph"]["nodes"][0]["target"] = target

    refused = upload(api, tenant, json.dumps(document).encode(), "program.json")

    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == code and named in refused.json()["detail"]
    assert api.get("/v1/artifacts", headers=tenant.headers).json()["data"] == []  # nothing kept


def test_a_pickled_program_is_never_a_program(api, tenant):
    payload = pickle.dumps({"format": "trajx.program", "graphs": {}})
    stored = upload(api, tenant, payload, "program.json")
    assert stored.status_code == 422 and stored.json()["code"] == "invalid_json"
    other = upload(api, tenant, payload, "program.pt")  # kept as an opaque file, never a program
    assert other.status_code == 201 and other.json()["kind"] == "other"


def test_a_job_naming_a_checkpoint_as_its_program_is_refused(api, tenant):
    spec = transfer_spec(api, tenant)
    spec = {**spec, "arch": {"program": spec["source"][0]}, "targets": [{"checkpoint": spec["source"][1]}]}
    refused = api.post("/v1/jobs", json={"spec": spec}, headers=tenant.headers)
    assert refused.status_code == 422 and refused.json()["code"] == "wrong_artifact_kind"
    assert "expected a model program" in refused.json()["detail"]


@pytest.mark.parametrize("arch, targets, message", [
    ({"program": "art_" + "0" * 32, "config": {"width": 3}}, None, "no 'config'"),
    ({"program": "art_" + "0" * 32, "name": "mlp"}, None, "exactly one of 'name' or 'program'"),
    ({"program": "art_" + "0" * 32}, [{"seed": 1}], "no initializer"),
])
def test_program_specs_are_checked_before_any_artifact_is_read(api, tenant, arch, targets, message):
    spec = copy.deepcopy(transfer_spec(api, tenant))
    spec["arch"] = arch
    if targets is not None:
        spec["targets"] = targets
    refused = api.post("/v1/jobs", json={"spec": spec}, headers=tenant.headers)
    assert refused.status_code == 422, refused.text
    assert message in refused.text


def test_a_program_upload_needs_no_torch_on_the_api(program_bytes, tmp_path):
    # The API's whole check runs in a process where importing torch fails.
    import subprocess
    import sys

    path = tmp_path / "program.json"
    path.write_bytes(program_bytes)
    probe = ("import sys, json; sys.modules['torch'] = None\n"
             "from app.core.storage.artifacts import inspect_file\n"
             f"print(inspect_file(__import__('pathlib').Path({str(path)!r}), 'program.json', 1 << 20).kind)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "program"
