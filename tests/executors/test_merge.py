"""The `merge` executor: N checkpoints in; the aligned, weighted merge (or a greedy soup) and its report out."""

import json

import pytest
import torch

from tests.executors.trajectory_files import ARCH, MLP, write_files
from trajx.engine.permutation.spec import apply_permutation
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.zoo import build_model, example_input
from trajx.errors import InvalidInput
from trajx.executors import RunContext, executor_for
from trajx.io import load_data, load_tensors, save_tensors
from trajx.job_spec import BN_BATCHES, parse_job_spec


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("trajectory")
    found = write_files(directory)
    # A permuted twin of the last checkpoint, and the held-out digits split in two: one to
    # choose on, one to score on.
    model = build_model(*MLP)
    perm_spec = derive_spec(model, example_input(*MLP))
    last = load_tensors(found.checkpoints[-1], "last")
    save_tensors(directory / "twin.safetensors",
                 apply_permutation(perm_spec, perm_spec.random(torch.Generator().manual_seed(4)), last))
    test = load_data(found.test, "test")
    for name, rows in (("select", slice(0, 200)), ("score", slice(200, None))):
        save_tensors(directory / f"{name}.safetensors", {"inputs": test.inputs[rows], "targets": test.targets[rows]})
    return found, directory


def spec(files, **overrides):
    found, directory = files
    return parse_job_spec({"kind": "merge", "arch": ARCH,
                           "models": [str(found.checkpoints[-1]), str(found.other_run), str(directory / "twin.safetensors")],
                           "train_data": str(found.train), "eval_data": str(directory / "score.safetensors"),
                           "params": {"device": "cpu", "alphas": [0.0, 0.5, 1.0]}} | overrides)


def _run(document, out):
    out.mkdir(exist_ok=True)
    return executor_for("merge")(document, lambda ref: ref, out, RunContext())


def test_reference_merge_is_the_weighted_mean_of_the_aligned_models(files, tmp_path):
    weights = [0.5, 0.3, 0.2]
    manifest = _run(spec(files, weights=weights, outputs={"aligned": True}), tmp_path)
    assert {f.role for f in manifest.files} == {"merged", "permutations", "aligned", "report"}
    found, directory = files
    perm_spec = derive_spec(build_model(*MLP), example_input(*MLP))
    perms = load_tensors(tmp_path / "permutations.safetensors", "p")
    models = [load_tensors(p, "m") for p in (found.checkpoints[-1], found.other_run, directory / "twin.safetensors")]
    aligned = [apply_permutation(perm_spec, {g.name: perms[f"model-{i}/{g.name}"] for g in perm_spec.groups}, m)
               for i, m in enumerate(models)]
    for name, tensor in aligned[2].items():  # the twin is matched back onto the reference exactly
        assert torch.equal(tensor, models[0][name]), name
    merged = load_tensors(tmp_path / "merged.safetensors", "merged")
    for name, tensor in merged.items():
        expected = sum(w * m[name] for w, m in zip(weights, aligned))
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6, msg=name)
    summary = manifest.summary
    assert summary["scored_on"] == "eval_data" and summary["bn_samples"] == BN_BATCHES * 128
    assert len(summary["inputs"]) == len(summary["barriers"]) == 3
    assert summary["inputs"][0] == summary["inputs"][2]  # the twin computes the reference's function
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["weights"] == pytest.approx(weights)
    models_report = report["alignment"]["models"]
    assert models_report[0]["sweeps"] == 0 and all(m["sweeps"] >= 1 for m in models_report[1:])
    assert models_report[1]["objective"] >= models_report[1]["objective_before"]
    assert [p["alpha"] for p in report["barriers"][0]["points"]] == [0.0, 0.5, 1.0]


def test_merge_many_and_per_layer_weights(files, tmp_path):
    document = spec(files, align="mean", layer_weights={"head": [0.0, 1.0, 0.0]})
    manifest = _run(document, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    alignment = report["alignment"]
    assert 1 <= alignment["rounds"] <= 10 and len(alignment["changed_per_round"]) == alignment["rounds"]
    assert alignment["rounds"] == 10 or alignment["changed_per_round"][-1] == 0
    found, _ = files
    perm_spec = derive_spec(build_model(*MLP), example_input(*MLP))
    perms = load_tensors(tmp_path / "permutations.safetensors", "p")
    other = apply_permutation(perm_spec, {g.name: perms[f"model-1/{g.name}"] for g in perm_spec.groups},
                              load_tensors(found.other_run, "b"))
    merged = load_tensors(tmp_path / "merged.safetensors", "merged")
    assert torch.equal(merged["head.weight"], other["head.weight"])  # the head is model 1's alone
    assert not torch.equal(merged["blocks.0.fc.weight"], other["blocks.0.fc.weight"])
    assert manifest.summary["merged"]["accuracy"] > 0.3


def test_repair_and_a_greedy_soup_report_which_split_chose_and_which_scored(files, tmp_path):
    found, directory = files
    soup = _run(spec(files, models=[str(p) for p in found.checkpoints[3:]], align="none", soup="greedy",
                     select_data=str(directory / "select.safetensors")), tmp_path / "soup")
    result = soup.summary["soup"]
    assert result["chosen_on"] == "select_data" and result["scored_on"] == "eval_data"
    assert result["ingredients"][0] == result["ranking"][0] == result["best_single"]["model"]
    # Greedy never lowers the choosing split's score below the best single model's.
    assert result["metrics"]["select_data"]["accuracy"] >= result["best_single"]["select_data"]["accuracy"]
    assert {f.role for f in soup.files} == {"merged", "soup", "report"}

    repaired = _run(spec(files, repair=True), tmp_path / "repair")
    plain = _run(spec(files), tmp_path / "plain")
    report = json.loads((tmp_path / "repair" / "report.json").read_text())
    assert [r["layer"] for r in report["repair"]] == ["blocks.0.fc", "blocks.1.fc"]
    assert repaired.summary["merged"]["loss"] != plain.summary["merged"]["loss"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"soup": "greedy"}, "select_data: a soup chooses"),
    ({"weights": [1.0, 2.0]}, "weights: needs one non-negative weight per model (3)"),
    ({"reference": 3}, "reference: 3 is not an index"),
    ({"params": {"alphas": [0.0, 0.7, 0.5, 1.0]}}, "params.alphas: a barrier needs an increasing grid"),
])
def test_bad_specs_are_refused_naming_the_field(files, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec(files, **overrides)


def test_repair_is_refused_on_a_net_with_batch_norm(tmp_path):
    arch = {"name": "mlp", "config": {**ARCH["config"], "norm": "batchnorm"}}
    from trajx.engine.zoo import init_state_dict
    for seed in (0, 1):
        save_tensors(tmp_path / f"m{seed}.safetensors", init_state_dict(arch["name"], arch["config"], seed))
    document = parse_job_spec({"kind": "merge", "arch": arch, "repair": True, "train_data": "x", "eval_data": "y",
                               "models": [str(tmp_path / "m0.safetensors"), str(tmp_path / "m1.safetensors")]})
    with pytest.raises(InvalidInput, match="repair: the model has BatchNorm layers"):
        executor_for("merge")(document, lambda ref: ref, tmp_path, RunContext())
