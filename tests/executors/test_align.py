"""The `align` executor: two checkpoints in; permuted B, permutations, barriers, merged model out."""

import json

import pytest
import torch

from tests.executors.trajectory_files import ARCH, MLP, write_files
from trajx.engine.permutation.spec import apply_permutation
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.zoo import build_model, example_input
from trajx.errors import InvalidInput
from trajx.executors import RunContext, executor_for
from trajx.io import load_tensors, save_tensors
from trajx.job_spec import BN_BATCHES, parse_job_spec


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("trajectory"))


def spec(files, **overrides):
    return parse_job_spec({"kind": "align", "arch": ARCH, "model_a": str(files.checkpoints[-1]),
                           "model_b": str(files.other_run), "train_data": str(files.train),
                           "eval_data": str(files.test), "params": {"device": "cpu"}} | overrides)


def test_weights_on_a_permuted_twin_recover_it_with_no_barrier(files, tmp_path):
    model = build_model(*MLP)
    perm_spec = derive_spec(model, example_input(*MLP))
    a = load_tensors(files.checkpoints[-1], "a")
    save_tensors(tmp_path / "twin.safetensors",
                 apply_permutation(perm_spec, perm_spec.random(torch.Generator().manual_seed(3)), a))
    out = tmp_path / "out"
    out.mkdir()
    manifest = executor_for("align")(spec(files, model_b=str(tmp_path / "twin.safetensors"),
                                          outputs={"merged": True}),
                                     lambda ref: ref, out, RunContext())
    assert {f.role for f in manifest.files} == {"aligned_b", "permutations", "merged", "report"}
    aligned = load_tensors(out / "aligned_b.safetensors", "b")
    for name, tensor in a.items():
        torch.testing.assert_close(aligned[name], tensor, msg=name)
    assert set(load_tensors(out / "permutations.safetensors", "p")) == {g.name for g in perm_spec.groups}
    assert abs(manifest.summary["aligned_loss_barrier"]) < 1e-4 and manifest.summary["merged_accuracy"] > 0.8
    report = json.loads((out / "report.json").read_text())
    assert [p["alpha"] for p in report["curves"]["aligned"]["points"]] == pytest.approx([i / 10 for i in range(11)])
    assert all("accuracy" in p and "loss" in p for p in report["curves"]["plain"]["points"])


@pytest.mark.parametrize("method", ["weights", "activations"])
def test_aligning_an_independent_run_lowers_the_barrier(files, tmp_path, method):
    seen = []
    manifest = executor_for("align")(spec(files, method=method), lambda ref: ref, tmp_path,
                                     RunContext(on_progress=seen.append))
    summary = manifest.summary
    assert summary["aligned_loss_barrier"] < 0.7 * summary["plain_loss_barrier"]
    assert summary["merged_accuracy"] is None and [p.done for p in seen] == [11, 22]
    if method == "weights":
        assert summary["matching_sweeps"] >= 1 and summary["matching_objective"] > 0
    else:
        assert summary["matching_objective"] is None


def test_the_alpha_grid_and_scoring_split_are_configurable_and_reported(files, tmp_path):
    document = spec(files, eval_data=None, params={"device": "cpu", "alphas": [0.0, 0.25, 0.5, 1.0]},
                    outputs={"merged": True})
    manifest = executor_for("align")(document, lambda ref: ref, tmp_path, RunContext())
    report = json.loads((tmp_path / "report.json").read_text())
    assert [p["alpha"] for p in report["curves"]["aligned"]["points"]] == [0.0, 0.25, 0.5, 1.0]
    assert manifest.summary["scored_on"] == "train_data" and manifest.summary["bn_samples"] == BN_BATCHES * 128
    midpoint = report["curves"]["aligned"]["points"][2]
    assert manifest.summary["merged_accuracy"] == midpoint["accuracy"]
    objectives = report["matching"]["objectives"]
    assert len(objectives) == manifest.summary["matching_sweeps"] + 1 and objectives[-1] >= objectives[0]


def test_model_b_of_another_architecture_is_refused(files, tmp_path):
    narrow = {n: t[:32] if n.startswith("blocks.1") else t for n, t in load_tensors(files.other_run, "b").items()}
    save_tensors(tmp_path / "narrow.safetensors", narrow)
    with pytest.raises(InvalidInput) as error:
        executor_for("align")(spec(files, model_b=str(tmp_path / "narrow.safetensors")), lambda ref: ref,
                              tmp_path, RunContext())
    assert error.value.code == "checkpoint_mismatch" and error.value.details["artifact"] == "model_b"
