"""The `average` executor: checkpoint files in, averaged checkpoint(s), report and manifest out."""

import json

import pytest
import torch

from tests.executors.trajectory_files import ARCH, write_files
from trajx.errors import Cancelled, InvalidInput
from trajx.executors import RunContext, executor_for
from trajx.io import load_tensors, save_tensors
from trajx.job_spec import BN_BATCHES, parse_job_spec


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("trajectory"))


def spec(files, **overrides):
    return parse_job_spec({"kind": "average", "arch": ARCH, "checkpoints": [str(p) for p in files.checkpoints],
                           "train_data": str(files.train), "eval_data": str(files.test),
                           "method": {"name": "uniform", "last": 3}, "params": {"device": "cpu"}} | overrides)


def test_uniform_average_writes_the_averaged_checkpoint_and_a_report(files, tmp_path):
    manifest = executor_for("average")(spec(files), lambda ref: ref, tmp_path, RunContext())
    roles = {f.role: f for f in manifest.files}
    assert set(roles) == {"averaged", "report"}
    averaged = load_tensors(tmp_path / roles["averaged"].path, "averaged")
    stored = [load_tensors(p, "c") for p in files.checkpoints[-3:]]
    torch.testing.assert_close(averaged["blocks.0.fc.weight"],
                               torch.stack([s["blocks.0.fc.weight"] for s in stored]).mean(0))
    summary = manifest.summary
    assert summary["best"]["label"] == "uniform last=3" and summary["candidates"] == 1
    assert 0.8 < summary["best"]["metrics"]["accuracy"] == summary["best_accuracy"] <= 1
    assert summary["last_checkpoint"]["accuracy"] == summary["last_checkpoint_accuracy"] > 0.8
    assert summary["seconds"] > 0 and summary["peak_memory_bytes"] > 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"] == summary and "BatchNorm" in report["buffers"]


def test_a_sweep_reports_every_candidate_and_returns_the_best(files, tmp_path):
    seen = []
    document = spec(files, method={"name": "ema", "decay": 0.5}, sweep={"decay": [0.1, 0.5, 0.9]},
                    outputs={"candidates": True})
    manifest = executor_for("average")(document, lambda ref: ref, tmp_path, RunContext(on_progress=seen.append))
    assert [(p.done, p.total) for p in seen] == [(1, 3), (2, 3), (3, 3)]
    candidates = [f for f in manifest.files if f.role == "candidate"]
    assert [c.metadata["params"]["decay"] for c in candidates] == [0.1, 0.5, 0.9]
    best = max(candidates, key=lambda c: c.metadata["metrics"]["accuracy"])
    averaged = next(f for f in manifest.files if f.role == "averaged")
    assert manifest.summary["best"] == best.metadata == averaged.metadata
    # Tensors, not bytes: safetensors writes its metadata in no fixed order.
    best_state = load_tensors(tmp_path / best.path, "best")
    for name, tensor in load_tensors(tmp_path / averaged.path, "averaged").items():
        assert torch.equal(tensor, best_state[name]), name
    report = json.loads((tmp_path / "report.json").read_text())
    assert [c["metrics"] for c in report["candidates"]] == [c.metadata["metrics"] for c in candidates]


def test_a_checkpoint_of_another_architecture_is_refused_before_any_work(files, tmp_path):
    wide = {n: t for n, t in load_tensors(files.checkpoints[0], "c").items()}
    wide["blocks.1.fc.weight"] = torch.zeros(96, 64)
    save_tensors(tmp_path / "wide.safetensors", wide)
    document = spec(files, checkpoints=[str(files.checkpoints[0]), str(tmp_path / "wide.safetensors")],
                    method={"name": "uniform", "last": 2})
    seen = []
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidInput) as error:
        executor_for("average")(document, lambda ref: ref, out, RunContext(on_progress=seen.append))
    assert error.value.code == "checkpoint_mismatch" and error.value.details["artifact"] == "checkpoints[1]"
    assert "blocks.1.fc.weight" in error.value.message and not seen and not any(out.iterdir())


def test_a_cancel_is_honoured_between_checkpoints_of_one_window(files, tmp_path):
    checks = iter([False, False, False, True])  # the candidate check, then two checkpoints read
    with pytest.raises(Cancelled, match=r"checkpoints\[7\]"):
        executor_for("average")(spec(files, method={"name": "uniform", "last": 3}), lambda ref: ref, tmp_path,
                                RunContext(should_cancel=lambda: next(checks)))


def _renamed_run(files, directory, steps, metadata: bool):
    """The trajectory's checkpoints saved at `steps`: in their metadata, or in their names."""
    paths = []
    for path, step in zip(files.checkpoints, steps):
        paths.append(directory / (f"ckpt{step}.safetensors" if metadata else f"run-step-{step:04d}.safetensors"))
        save_tensors(paths[-1], load_tensors(path, "c"), {"step": str(step)} if metadata else None)
    return [str(p) for p in paths]


@pytest.mark.parametrize("metadata", [False, True])
def test_lawa_every_is_in_steps_read_from_names_or_metadata(files, tmp_path, metadata):
    steps = [10, 20, 30, 40, 60, 80, 100, 120]  # saved twice as often early on
    refs = _renamed_run(files, tmp_path, steps, metadata)
    out = tmp_path / "out"
    out.mkdir()
    manifest = executor_for("average")(spec(files, checkpoints=refs, method={"name": "lawa", "last": 3, "every": 20}),
                                       lambda ref: ref, out, RunContext())
    assert manifest.summary["steps_from"] == ("metadata" if metadata else "names")
    assert manifest.summary["best"]["newest_step"] == 120
    averaged = load_tensors(out / "averaged.safetensors", "a")
    expected = torch.stack([load_tensors(files.checkpoints[i], "c")["head.bias"] for i in (5, 6, 7)]).mean(0)
    torch.testing.assert_close(averaged["head.bias"], expected)
    with pytest.raises(InvalidInput, match="needs a checkpoint at step 90; the nearest are at steps 80 and 100"):
        executor_for("average")(spec(files, checkpoints=refs, method={"name": "lawa", "last": 4, "every": 10}),
                                lambda ref: ref, out, RunContext())
    given = spec(files, checkpoints=refs, steps=list(range(8)), method={"name": "lawa", "last": 4, "every": 2})
    assert executor_for("average")(given, lambda ref: ref, tmp_path / "given", RunContext()).summary["steps_from"] \
        == "spec"


def test_a_step_on_some_checkpoints_only_is_refused(files, tmp_path):
    refs = _renamed_run(files, tmp_path, range(1, 9), metadata=False)
    refs[3] = str(files.checkpoints[3])
    with pytest.raises(InvalidInput, match=r"checkpoints\[3\]: carries no step"):
        executor_for("average")(spec(files, checkpoints=refs), lambda ref: ref, tmp_path, RunContext())


def test_a_sweep_chooses_on_select_data_and_scores_on_eval_data(files, tmp_path):
    sweep = {"method": {"name": "uniform", "last": 1}, "sweep": {"last": [1, 2, 4]}}
    chosen_on_eval = executor_for("average")(spec(files, **sweep), lambda ref: ref, tmp_path / "a", RunContext())
    assert chosen_on_eval.summary["chosen_on"] == chosen_on_eval.summary["scored_on"] == "eval_data"
    assert "optimistic" in json.loads((tmp_path / "a" / "report.json").read_text())["warnings"][0]
    selected = executor_for("average")(spec(files, select_data=str(files.train), **sweep), lambda ref: ref,
                                       tmp_path / "b", RunContext())
    summary = selected.summary
    assert (summary["chosen_on"], summary["scored_on"]) == ("select_data", "eval_data")
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    best = max(report["candidates"], key=lambda c: c["select_metrics"]["accuracy"])
    assert summary["best"] == best and report["warnings"] == []


def test_the_last_checkpoint_gets_the_candidates_batch_norm_treatment(tmp_path):
    """Stored running statistics are never used: the last checkpoint scores exactly as the
    one-checkpoint window holding it."""
    from tests.support.engine_setups import digits
    from trajx.engine.zoo import init_state_dict

    arch = {"name": "mlp", "config": {**ARCH["config"], "norm": "batchnorm"}}
    train, test = digits()
    for name, data in (("train", train), ("test", test)):
        save_tensors(tmp_path / f"{name}.safetensors", {"inputs": data.inputs, "targets": data.targets})
    refs = []
    for seed in (0, 1):
        state = init_state_dict(arch["name"], arch["config"], seed)
        state["blocks.0.norm.running_var"] = torch.full_like(state["blocks.0.norm.running_var"], 50.0)
        refs.append(str(tmp_path / f"m{seed}.safetensors"))
        save_tensors(tmp_path / f"m{seed}.safetensors", state)
    document = parse_job_spec({"kind": "average", "arch": arch, "checkpoints": refs,
                               "train_data": str(tmp_path / "train.safetensors"),
                               "eval_data": str(tmp_path / "test.safetensors"),
                               "method": {"name": "uniform", "last": 1}, "params": {"device": "cpu"}})
    summary = executor_for("average")(document, lambda ref: ref, tmp_path / "out", RunContext()).summary
    assert summary["last_checkpoint"] == summary["best"]["metrics"] and summary["bn_samples"] == BN_BATCHES * 128
