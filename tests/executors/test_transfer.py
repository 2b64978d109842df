"""The transfer executor: a job spec over files in, validated inputs, result files and their manifest out."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from tests.support.engine_setups import mlp_setup
from trajx import arch_configs
from trajx.engine.transfer import gmt, schedule
from trajx.engine.zoo import registry as zoo_registry
from trajx.errors import InvalidInput
from trajx.executors import RunContext, RunProgress, executor_for
from trajx.executors import transfer as transfer_executor
from trajx.executors.transfer import pair_weighting
from trajx.io import INIT_SEED_KEY, load_tensors, save_tensors
from trajx.job_spec import parse_job_spec


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    setup = mlp_setup()
    directory = tmp_path_factory.mktemp("digits")
    paths = setup.write(directory)
    save_tensors(directory / "target.safetensors", setup.init(5))
    paths["target"] = directory / "target.safetensors"
    return setup, paths


def job(files, **overrides):
    setup, paths = files
    spec = {
        "method": "fgmt",
        "arch": {"name": setup.arch[0], "config": setup.arch[1]},
        "source": [str(paths["theta0"]), str(paths["thetaT"])],
        "targets": [{"seed": 1}, {"checkpoint": str(paths["target"])}],
        "train_data": str(paths["train"]),
        "eval_data": str(paths["test"]),
        "params": {"steps": 4, "batch_size": 128, "device": "cpu"},
    }
    return parse_job_spec(spec | overrides)


def execute(spec, out_dir: Path, on_progress=None):
    """The transfer executor as the worker reaches it; returns the manifest."""
    ctx = RunContext(on_progress=on_progress) if on_progress else RunContext()
    return executor_for(spec.kind)(spec, Path, out_dir, ctx)


def test_run_writes_every_result_file_and_a_report(files, tmp_path):
    seen: list[RunProgress] = []
    manifest = execute(job(files), tmp_path, on_progress=seen.append)
    summary = manifest.summary
    assert [(p.data["target_step"], p.data["target"]) for p in seen] == \
        [(s, t) for s in range(1, 5) for t in (0, 1)]
    assert [p.done for p in seen] == list(range(1, 9)) and {p.total for p in seen} == {8}
    listed = {(f.target, f.role): f for f in manifest.files}
    assert set(listed) == {(t, role) for t in (0, 1) for role in ("last", "best", "permutations", "metrics")} \
        | {(None, "report")}
    for file in manifest.files:  # the manifest is the truth about the files on disk
        content = (tmp_path / file.path).read_bytes()
        assert (file.sha256, file.size) == (hashlib.sha256(content).hexdigest(), len(content))
    assert listed[(1, "best")].metadata == {"step": summary["targets"][1]["best_step"]}
    for index in (0, 1):
        directory = tmp_path / f"target-{index}"
        last = load_tensors(directory / "last.safetensors", "last")
        assert set(last) == set(files[0].source[0])
        assert set(load_tensors(directory / "permutations.safetensors", "perm")) == \
            {g.name for g in files[0].spec.groups}
        assert (directory / "best.safetensors").exists()
        assert not (directory / "trajectory.safetensors").exists()
        metrics = json.loads((directory / "metrics.json").read_text())
        assert [m["step"] for m in metrics["steps"]] == [1, 2, 3, 4]
        assert all(m["gradient_seconds"] > 0 and m["matching_seconds"] > 0 and m["evaluation_seconds"] > 0
                   and m["source_gradient_seconds"] > 0 and "accuracy" in m for m in metrics["steps"])
        assert metrics["best_step"] == summary["targets"][index]["best_step"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["spec"]["method"] == "fgmt" and len(report["targets"][1]["steps"]) == 4
    assert report["targets"][1] == json.loads((tmp_path / "target-1" / "metrics.json").read_text())
    assert report["timings"]["backward_passes"] == 4 * 3 and report["timings"]["total_seconds"] > 0
    assert report["timings"]["peak_memory_bytes"] > 0 and report["versions"]["torch"] == torch.__version__
    first = summary["targets"][0]
    assert set(first) == {"last_accuracy", "best_accuracy", "best_step", "last_loss"}
    assert first["best_accuracy"] >= first["last_accuracy"] > 0.3
    assert first["last_accuracy"] == report["targets"][0]["steps"][-1]["accuracy"]


def test_trajectory_output_holds_every_step(files, tmp_path):
    spec = job(files, targets=[{"seed": 1}], outputs={"trajectory": True, "permutations": False},
               params={"steps": 2, "device": "cpu"}, eval_data=None)
    summary = execute(spec, tmp_path).summary
    trajectory = load_tensors(tmp_path / "target-0" / "trajectory.safetensors", "trajectory")
    assert {key.split("/")[0] for key in trajectory} == {"step0000", "step0001", "step0002"}
    assert not (tmp_path / "target-0" / "permutations.safetensors").exists()
    assert summary["targets"][0]["last_accuracy"] is None and summary["targets"][0]["best_step"] == 2


def test_bad_input_fails_before_any_work(files, tmp_path):
    wrong = tmp_path / "wrong.safetensors"
    save_tensors(wrong, {"head.weight": torch.zeros(10, 3)})
    spec = job(files, targets=[{"seed": 1}, {"checkpoint": str(wrong)}])
    seen = []
    with pytest.raises(InvalidInput) as info:
        execute(spec, tmp_path / "out", on_progress=seen.append)
    assert info.value.code == "checkpoint_mismatch" and "targets[1].checkpoint" in info.value.message
    assert seen == [] and not (tmp_path / "out").exists()


def test_oracle_reads_trained_targets(files, tmp_path):
    _, paths = files
    spec = job(files, method="oracle", targets=[{"checkpoint": str(paths["theta0"]),
                                                "trained": str(paths["thetaT"])}])
    summary = execute(spec, tmp_path).summary
    assert summary["targets"][0]["last_accuracy"] > 0.6  # the source itself, recovered


def test_too_few_steps_for_the_checkpoints_is_invalid(files, tmp_path):
    paths = files[1]
    spec = job(files, source=[str(paths["theta0"]), str(paths["target"]), str(paths["thetaT"])],
               params={"steps": 1, "device": "cpu"})
    with pytest.raises(InvalidInput) as info:
        execute(spec, tmp_path)
    assert info.value.code == "invalid_params" and info.value.details["field"] == "params.steps"


@pytest.mark.parametrize(("setting", "pretrained", "used"), [
    ("auto", [True, True], "unit"),  # every target a pre-trained backbone
    ("auto", [True, False], "none"),  # one random init among them
    ("auto", [False], "none"),
    ("none", [True], "none"),  # an explicit setting stands
    ("unit", [False], "unit"),
])
def test_auto_pair_weighting_resolves_by_the_targets(setting, pretrained, used):
    assert pair_weighting(setting, pretrained) == used


def _result_bytes(manifest, out_dir: Path) -> dict[str, bytes]:
    """The tensors a run returned (the JSON files also hold timings)."""
    return {f.path: (out_dir / f.path).read_bytes() for f in manifest.files if f.path.endswith(".safetensors")}


def test_auto_runs_random_inits_as_published_and_checkpoints_with_unit_pairs(files, tmp_path):
    paths, params = files[1], {"steps": 2, "batch_size": 128, "device": "cpu"}
    seeded, explicit = job(files, targets=[{"seed": 1}], params=params), \
        job(files, targets=[{"seed": 1}], params={**params, "pair_weighting": "none"})
    assert seeded.params.pair_weighting == "auto"
    runs = {name: execute(spec, tmp_path / name) for name, spec in (("auto", seeded), ("none", explicit))}
    assert runs["auto"].summary["pair_weighting"] == "none"
    assert _result_bytes(runs["auto"], tmp_path / "auto") == _result_bytes(runs["none"], tmp_path / "none")

    drawn = tmp_path / "drawn.safetensors"  # an init as `trajx init --seed 5` writes it
    save_tensors(drawn, load_tensors(paths["target"], "target"), {INIT_SEED_KEY: "5"})
    backbones = [{"checkpoint": str(paths["target"])}, {"checkpoint": str(paths["thetaT"])}]
    for name, targets, used in (("backbones", backbones, "unit"), ("drawn", [{"checkpoint": str(drawn)}], "none")):
        assert execute(job(files, targets=targets, params=params), tmp_path / name).summary["pair_weighting"] == used


def test_each_per_job_decision_is_made_once(files, tmp_path, monkeypatch):
    """The step plan is made once (the executor's, checked before any work, is the one the
    engine follows) and the architecture's config validated once for every model built."""
    plans, validated = [], []

    def plan_trajectory(*args):
        plans.append(args)
        return schedule.plan_trajectory(*args)

    def validate_config(name, model, config):
        validated.append(isinstance(config, BaseModel))
        return arch_configs.validate_config(name, model, config)

    monkeypatch.setattr(transfer_executor, "plan_trajectory", plan_trajectory)
    monkeypatch.setattr(gmt, "plan_trajectory", plan_trajectory)
    monkeypatch.setattr(zoo_registry, "validate_config", validate_config)
    spec = job(files, targets=[{"seed": 1}, {"seed": 2}], params={"steps": 2, "device": "cpu"}, eval_data=None)

    execute(spec, tmp_path)

    assert plans == [("cosine", 2, 2)]
    assert validated.count(False) == 1  # the spec's dict, once; every later build reuses the parsed config
