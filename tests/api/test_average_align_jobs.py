"""`average` and `align` jobs over HTTP: accepted, queued per device, refused by field."""

import pytest

from tests.api.test_jobs import create
from tests.support.files import data_shard, mlp_checkpoint
from tests.support.http import MLP_CONFIG, uploaded_id


@pytest.fixture
def checkpoints(api, tenant) -> list[str]:
    return [uploaded_id(api, tenant, mlp_checkpoint(fill=i)) for i in range(4)]


@pytest.fixture
def train(api, tenant) -> str:
    return uploaded_id(api, tenant, data_shard(), "train.safetensors")


def average(checkpoints, train, **overrides) -> dict:
    return {"kind": "average", "arch": {"name": "mlp", "config": MLP_CONFIG}, "checkpoints": checkpoints,
            "train_data": train, "method": {"name": "uniform", "last": 2}} | overrides


def align(checkpoints, train, **overrides) -> dict:
    return {"kind": "align", "arch": {"name": "mlp", "config": MLP_CONFIG}, "model_a": checkpoints[0],
            "model_b": checkpoints[1], "train_data": train} | overrides


def test_both_kinds_are_queued_with_their_defaults(api, tenant, dispatcher, checkpoints, train):
    averaged = create(api, tenant, average(checkpoints, train, params={"device": "cpu"}))
    aligned = create(api, tenant, align(checkpoints, train))
    assert (averaged.status_code, aligned.status_code) == (202, 202), averaged.text + aligned.text
    assert averaged.json()["kind"] == "average" and averaged.json()["queue"] == "cpu"
    assert aligned.json()["spec"]["method"] == "weights" and aligned.json()["queue"] == "gpu"
    events = api.get(f"/v1/jobs/{averaged.json()['id']}/events", headers=tenant.headers).json()["data"]
    assert events[0]["data"] == {"kind": "average", "method": "uniform", "arch": "mlp", "checkpoints": 4,
                                 "sweep": False}


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"method": {"name": "uniform", "last": 5}}, "spec.method.last", "a window of last=5"),
    ({"method": {"name": "ema", "decay": 1.5}}, "spec.method.ema.decay", "less than 1"),
    ({"method": {"name": "ema", "decay": 0.9}, "sweep": {"decay": [0.5]}}, "spec.eval_data", "a sweep chooses"),
])
def test_average_refusals_name_the_field(api, tenant, dispatcher, checkpoints, train,
                                         overrides, field, message):
    response = create(api, tenant, average(checkpoints, train, **overrides))
    body = response.json()
    assert response.status_code == 422 and body["code"] == "validation_error"
    assert any(e["field"] == field and message in e["message"] for e in body["errors"]), body
    assert dispatcher.dispatched == []


def test_mixed_architectures_are_a_checkpoint_mismatch_naming_the_checkpoint(api, tenant, dispatcher,
                                                                             checkpoints, train):
    wide = uploaded_id(api, tenant, mlp_checkpoint(hidden=32))
    for spec, field in ((average([*checkpoints[:2], wide, checkpoints[3]], train), "spec.checkpoints[2]"),
                        (align([checkpoints[0], wide], train), "spec.model_b")):
        response = create(api, tenant, spec)
        body = response.json()
        assert response.status_code == 422 and body["code"] == "checkpoint_mismatch", body
        assert body["errors"][0]["field"] == field and body["errors"][0]["artifact"] == wide
    assert dispatcher.dispatched == []


def test_a_data_shard_in_place_of_a_model_is_the_wrong_kind(api, tenant, dispatcher, checkpoints, train):
    response = create(api, tenant, align([checkpoints[0], train], train))
    assert response.status_code == 422 and response.json()["code"] == "wrong_artifact_kind"
    assert response.json()["errors"][0]["field"] == "spec.model_b"


def test_a_config_the_architecture_refuses_is_a_422_naming_the_field(api, tenant, dispatcher,
                                                                     checkpoints, train):
    response = create(api, tenant, align(checkpoints, train, arch={"name": "mlp", "config": {"hidden": [4]}}))
    body = response.json()
    assert response.status_code == 422 and body["code"] == "invalid_config"
    assert "spec.arch.config.in_features" in {e["field"] for e in body["errors"]}


def merge(checkpoints, train, **overrides) -> dict:
    return {"kind": "merge", "arch": {"name": "mlp", "config": MLP_CONFIG}, "models": checkpoints[:3],
            "train_data": train, "eval_data": train} | overrides


def test_a_merge_job_is_queued_and_its_refusals_name_the_field(api, tenant, dispatcher, checkpoints, train):
    created = create(api, tenant, merge(checkpoints, train, align="mean", params={"device": "cpu"}))
    assert created.status_code == 202, created.text
    assert created.json()["kind"] == "merge" and created.json()["queue"] == "cpu"
    events = api.get(f"/v1/jobs/{created.json()['id']}/events", headers=tenant.headers).json()["data"]
    assert events[0]["data"] == {"kind": "merge", "align": "mean", "arch": "mlp", "models": 3, "repair": False,
                                 "soup": False}
    refused = create(api, tenant, merge(checkpoints, train, soup="greedy"))
    assert refused.status_code == 422 and any(e["field"] == "spec.select_data" and "a soup chooses" in e["message"]
                                              for e in refused.json()["errors"])
    wrong = create(api, tenant, merge(checkpoints, train, soup="greedy", select_data=checkpoints[0]))
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "spec.select_data"
    assert len(dispatcher.dispatched) == 1
