"""The `average` executor: checkpoint files in, averaged checkpoint(s), report and manifest out."""

import json

import pytest
import torch

from tests.executors.trajectory_files import ARCH, write_files
from trajx.errors import Cancelled, InvalidInput
from trajx.executors import RunContext, executor_for
from trajx.io import load_tensors, save_tensors
from trajx.job_spec import parse_job_spec


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
