"""`average` and `align` jobs (and averaged transfers) through a real embedded server, the
`trajx` CLI (`submit`, `run`) and the HTTP API's refusals."""

import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.cli.conftest import ARCH, write_spec
from trajx.client import Client
from trajx.engine.zoo import init_state_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models_dir(inputs_dir, tmp_path_factory) -> Path:
    """Five checkpoints of ARCH (seeded inits stand in for a run) and a wider model."""
    out = tmp_path_factory.mktemp("models")
    for seed in range(5):
        save_file(init_state_dict(ARCH["name"], ARCH["config"], seed), str(out / f"ckpt{seed}.safetensors"))
    wide = {**ARCH["config"], "hidden": [24]}
    save_file(init_state_dict(ARCH["name"], wide, 0), str(out / "wide.safetensors"))
    for shard in ("train", "heldout"):
        (out / f"{shard}.safetensors").symlink_to(inputs_dir / f"{shard}.safetensors")
    return out


def _spec(directory: Path, models: Path, document: dict) -> Path:
    def rel(name: str) -> str:
        return os.path.relpath(models / name, directory)

    document = {"arch": ARCH, "train_data": rel("train.safetensors"), "eval_data": rel("heldout.safetensors"),
                "params": {"device": "cpu", "batch_size": 64}} | document
    for key in ("checkpoints", "models"):
        if key in document:
            document[key] = [rel(name) for name in document[key]]
    for key in ("model_a", "model_b", "select_data"):
        if key in document:
            document[key] = rel(document[key])
    path = directory / "spec.json"
    path.write_text(json.dumps(document))
    return path


AVERAGE = {"kind": "average", "checkpoints": [f"ckpt{i}.safetensors" for i in range(5)],
           "method": {"name": "ema", "decay": 0.5}, "sweep": {"decay": [0.3, 0.6]}}
ALIGN = {"kind": "align", "model_a": "ckpt0.safetensors", "model_b": "ckpt1.safetensors",
         "method": "activations", "outputs": {"merged": True}}
MERGE = {"kind": "merge", "models": [f"ckpt{i}.safetensors" for i in range(3)], "align": "mean", "repair": True,
         "soup": "greedy", "select_data": "train.safetensors"}


def _submit_and_download(cli, models_dir: Path, tmp_path: Path, document: dict) -> tuple[dict, dict]:
    """`trajx submit --wait --download results`: the finished job and its downloaded report."""
    result = cli("submit", str(_spec(tmp_path, models_dir, document)), "--wait", "--timeout", "120",
                 "--download", "results", "--json")
    assert result.code == 0, result.stderr
    job = result.json()["job"]
    assert job["kind"] == document["kind"] and job["status"] == "succeeded"
    return job, json.loads((tmp_path / "results" / "report.json").read_text())


def test_average_submits_waits_and_downloads_its_results(cli, models_dir, tmp_path):
    job, report = _submit_and_download(cli, models_dir, tmp_path, AVERAGE)
    assert {f["role"] for f in job["result"]["files"]} == {"averaged", "report"}
    assert job["result"]["averaged"] and job["summary"]["candidates"] == 2
    averaged = load_file(tmp_path / "results" / "averaged.safetensors")
    assert set(averaged) == set(load_file(models_dir / "ckpt0.safetensors"))
    assert [c["params"]["decay"] for c in report["candidates"]] == [0.3, 0.6]


def test_merge_submits_waits_and_downloads_its_results(cli, models_dir, tmp_path):
    job, report = _submit_and_download(cli, models_dir, tmp_path, MERGE)
    assert {f["role"] for f in job["result"]["files"]} == {"merged", "soup", "permutations", "report"}
    soup = job["summary"]["soup"]
    assert (soup["chosen_on"], soup["scored_on"]) == ("select_data", "eval_data") and soup["ingredients"]
    assert report["alignment"]["rounds"] >= 1 and len(report["repair"]) == 1
    assert set(load_file(tmp_path / "results" / "merged.safetensors")) == set(load_file(models_dir / "ckpt0.safetensors"))


def test_align_submits_waits_and_downloads_its_results(cli, models_dir, tmp_path):
    job, report = _submit_and_download(cli, models_dir, tmp_path, ALIGN)
    assert {f["role"] for f in job["result"]["files"]} == {"aligned_b", "permutations", "merged", "report"}
    assert job["summary"]["plain_loss_barrier"] >= 0 and job["summary"]["merged_accuracy"] is not None
    assert len(report["curves"]["plain"]["points"]) == len(report["curves"]["aligned"]["points"]) == 11
    assert set(load_file(tmp_path / "results" / "permutations.safetensors")) == {"P_blocks.0.fc.weight_0"}


def test_a_transfer_returns_the_average_of_its_last_steps(cli, inputs_dir, tmp_path):
    spec = write_spec(tmp_path, inputs_dir, eval_data=os.path.relpath(inputs_dir / "heldout.safetensors", tmp_path),
                      outputs={"average": {"last": 2}})
    result = cli("submit", str(spec), "--wait", "--timeout", "120", "--json")
    assert result.code == 0, result.stderr
    job = result.json()["job"]
    assert job["result"]["targets"][0]["average"]
    assert job["summary"]["targets"][0]["average_accuracy"] is not None


@pytest.mark.parametrize(("document", "field", "code"), [
    (AVERAGE | {"checkpoints": ["ckpt0.safetensors", "wide.safetensors"], "sweep": None},
     "spec.checkpoints[1]", "checkpoint_mismatch"),
    (ALIGN | {"model_b": "wide.safetensors"}, "spec.model_b", "checkpoint_mismatch"),
])
def test_mixed_architectures_are_refused_by_the_api(cli, models_dir, tmp_path, document, field, code):
    result = cli("submit", str(_spec(tmp_path, models_dir, document)), "--json")
    assert result.code == 2, result.stderr
    problem = result.json()["error"]
    assert problem["code"] == code and problem["errors"][0]["field"] == field, problem


def test_a_window_longer_than_the_list_is_refused_before_upload(cli, models_dir, tmp_path):
    result = cli("submit", str(_spec(tmp_path, models_dir, AVERAGE | {
        "method": {"name": "uniform", "last": 6}, "sweep": None})), "--json")
    assert result.code == 2 and "method.last: a window of last=6" in result.stdout + result.stderr


@pytest.mark.parametrize(("document", "files"), [
    (AVERAGE, {"averaged.safetensors", "report.json"}),
    (ALIGN, {"aligned_b.safetensors", "permutations.safetensors", "merged.safetensors", "report.json"}),
    (MERGE, {"merged.safetensors", "soup.safetensors", "permutations.safetensors", "report.json"}),
])
def test_trajx_run_writes_the_same_results_locally(cli, models_dir, tmp_path, document, files):
    result = cli("run", str(_spec(tmp_path, models_dir, document)), "--out", "local", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["device"] == "cpu" and (tmp_path / "local" / "report.json").exists()
    assert {p.name for p in (tmp_path / "local").iterdir()} == files


def test_the_python_client_runs_both_kinds_and_reads_their_results(server, cli, models_dir, tmp_path):
    with Client(server.url, server.api_key) as client:
        ids = {p.name: client.upload(p).id for p in sorted(models_dir.iterdir())}
        data = {"arch": ARCH, "train_data": ids["train.safetensors"], "eval_data": ids["heldout.safetensors"],
                "params": {"device": "cpu"}}
        average = client.create_job({**data, "kind": "average", "method": {"name": "uniform", "fraction": 0.5},
                                     "checkpoints": [ids[f"ckpt{i}.safetensors"] for i in range(5)]})
        align = client.create_job({**data, "kind": "align", "model_a": ids["ckpt0.safetensors"],
                                   "model_b": ids["ckpt2.safetensors"]})
        average, align = (client.wait(job.id, timeout=120, poll_interval=0.1) for job in (average, align))
        assert (average.status, align.status) == ("succeeded", "succeeded")
        averaged = load_file(client.download_result(average.result_file("averaged"), tmp_path / "avg"))
        aligned = load_file(client.download_result(align.result_file("aligned_b"), tmp_path / "align"))
    assert average.result_file("averaged").metadata["label"] == "uniform last=3"
    assert set(averaged) == set(aligned) == set(load_file(models_dir / "ckpt0.safetensors"))
    status = cli("status", average.id)  # the human view shows the kind's summary
    assert status.code == 0 and "best_accuracy" in status.stdout and "averaged.safetensors" in status.stdout
