"""Issue 25: `average`, `align` and `merge` jobs resume at their natural unit (an averaged
candidate, an alignment phase, an input's barrier): a run given the checkpoints of units 1..k of
an interrupted one does not redo them, and writes the very bytes of an uninterrupted run."""

import json

import pytest

import trajx.executors.average
from tests.executors.trajectory_files import ARCH, write_files
from trajx.executors import RunContext, executor_for
from trajx.executors.inputs import JobInputs
from trajx.job_spec import parse_job_spec

SWEEPS = {  # uniform windows are nested (one running sum); EMA decays are built one by one
    "nested": ({"name": "uniform", "last": 2}, {"last": [1, 2, 4, 3]}),
    "independent": ({"name": "ema", "decay": 0.5}, {"decay": [0.1, 0.5, 0.9]}),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("trajectory"))


def _average_spec(files, sweep: str, candidates: bool = True):
    method, grid = SWEEPS[sweep]
    return parse_job_spec({"kind": "average", "arch": ARCH, "checkpoints": [str(p) for p in files.checkpoints],
                           "train_data": str(files.train), "eval_data": str(files.test), "method": method,
                           "sweep": grid, "outputs": {"candidates": candidates}, "params": {"device": "cpu"}})


def _align_spec(files, method: str):
    return parse_job_spec({"kind": "align", "method": method, "arch": ARCH, "model_a": str(files.checkpoints[-1]),
                           "model_b": str(files.other_run), "train_data": str(files.train),
                           "eval_data": str(files.test), "outputs": {"merged": True},
                           "params": {"device": "cpu", "alphas": [0.0, 0.5, 1.0]}})


def _run(spec, out_dir, resume=()):
    """(manifest, checkpoints reported, progress reported, files read) of one run of `spec`."""
    checkpoints, progress, read = [], [], []

    def resolve(ref):
        read.append(ref)
        return ref

    out_dir.mkdir()
    context = RunContext(on_progress=progress.append, resume=resume, on_checkpoint=checkpoints.append)
    return executor_for(spec.kind)(spec, resolve, out_dir, context), checkpoints, progress, read


def _tensor_bytes(manifest, out_dir) -> dict[str, bytes]:
    return {f.path: (out_dir / f.path).read_bytes() for f in manifest.files if f.path.endswith(".safetensors")}


def _report(out_dir, drop=("seconds", "peak_memory_bytes", "matching_seconds")) -> dict:
    report = json.loads((out_dir / "report.json").read_text())
    report["summary"] = {k: v for k, v in report["summary"].items() if k not in drop}
    return report


@pytest.mark.parametrize("kept", [True, False], ids=["states-kept", "states-rebuilt"])
@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_an_average_resumed_after_candidate_k_builds_only_the_rest_and_the_same_files(files, tmp_path, sweep, kept,
                                                                                      monkeypatch):
    if not kept:  # a large model's record holds no state: a resume rebuilds the ones it must write
        monkeypatch.setattr(trajx.executors.average, "RECORD_TENSORS_MAX_BYTES", 0)
    spec = _average_spec(files, sweep)
    clean, units, _, _ = _run(spec, tmp_path / "clean")
    count = len(spec.sweep.last or spec.sweep.decay)
    assert [c.step for c in units] == list(range(1, count + 1))
    assert all(bool(c.state) == kept for c in units)

    k = 2
    resumed, later, progress, _ = _run(spec, tmp_path / "resumed", resume=units[:k])
    assert [c.step for c in later] == list(range(k + 1, count + 1))  # no candidate scored again
    assert [c.data for c in later] == [c.data for c in units[k:]]
    assert [p.done for p in progress] == list(range(k + 1, count + 1))
    assert _tensor_bytes(resumed, tmp_path / "resumed") == _tensor_bytes(clean, tmp_path / "clean")
    assert [f.path for f in resumed.files] == [f.path for f in clean.files]
    assert _report(tmp_path / "resumed") == _report(tmp_path / "clean")


def test_an_average_resumed_after_its_last_candidate_averages_no_window_again(files, tmp_path, monkeypatch):
    spec = _average_spec(files, "independent")
    clean, units, _, _ = _run(spec, tmp_path / "clean")
    loaded = []
    real = JobInputs.checkpoint
    monkeypatch.setattr(JobInputs, "checkpoint", lambda self, ref, what: loaded.append(ref) or real(self, ref, what))
    resumed, later, progress, _ = _run(spec, tmp_path / "resumed", resume=units)
    assert later == [] and progress == []
    assert loaded == [str(files.checkpoints[-1])]  # only the baseline: the last checkpoint, scored
    assert _tensor_bytes(resumed, tmp_path / "resumed") == _tensor_bytes(clean, tmp_path / "clean")


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_a_resume_without_kept_states_rebuilds_only_the_best(files, tmp_path, sweep, monkeypatch):
    monkeypatch.setattr(trajx.executors.average, "RECORD_TENSORS_MAX_BYTES", 0)
    spec = _average_spec(files, sweep, candidates=False)
    clean, units, _, _ = _run(spec, tmp_path / "clean")
    loaded = []
    real = JobInputs.checkpoint
    monkeypatch.setattr(JobInputs, "checkpoint", lambda self, ref, what: loaded.append(ref) or real(self, ref, what))
    resumed, later, _, _ = _run(spec, tmp_path / "resumed", resume=units)
    assert later == []
    assert len(loaded) == clean.summary["best"]["checkpoints"] + 1  # the best's window, and the baseline
    assert _tensor_bytes(resumed, tmp_path / "resumed") == _tensor_bytes(clean, tmp_path / "clean")


@pytest.mark.parametrize("method", ["weights", "activations"])
@pytest.mark.parametrize("k", [1, 2])
def test_an_alignment_resumed_after_phase_k_redoes_none_and_writes_the_same_files(files, tmp_path, method, k):
    spec = _align_spec(files, method)
    clean, units, progress, _ = _run(spec, tmp_path / "clean")
    assert [(c.step, c.data["unit"]) for c in units] == [(1, "matching"), (2, "plain curve"), (3, "aligned curve")]
    resumed, later, resumed_progress, _ = _run(spec, tmp_path / "resumed", resume=units[:k])
    assert [c.step for c in later] == list(range(k + 1, 4))
    assert [c.data for c in later] == [c.data for c in units[k:]]
    assert resumed_progress == progress[k - 1:]  # one report per curve still to measure
    assert _tensor_bytes(resumed, tmp_path / "resumed") == _tensor_bytes(clean, tmp_path / "clean")
    assert _report(tmp_path / "resumed") == _report(tmp_path / "clean")


@pytest.mark.parametrize(("align", "units"), [("mean", ["alignment"] + [f"barrier of models[{i}]" for i in range(3)]),
                                              ("none", [f"barrier of models[{i}]" for i in range(3)])])
def test_a_merge_resumed_after_unit_2_redoes_neither_alignment_nor_barriers(files, tmp_path, align, units):
    spec = parse_job_spec({"kind": "merge", "arch": ARCH, "align": align, "train_data": str(files.train),
                           "models": [str(files.checkpoints[-1]), str(files.other_run), str(files.checkpoints[-2])],
                           "eval_data": str(files.test), "outputs": {"aligned": True},
                           "params": {"device": "cpu", "alphas": [0.0, 0.5, 1.0]}})
    clean, done, _, _ = _run(spec, tmp_path / "clean")
    assert [(c.step, c.data["unit"]) for c in done] == list(enumerate(units, start=1))
    resumed, later, _, _ = _run(spec, tmp_path / "resumed", resume=done[:2])
    assert [c.data for c in later] == [c.data for c in done[2:]]
    assert _tensor_bytes(resumed, tmp_path / "resumed") == _tensor_bytes(clean, tmp_path / "clean")
    assert _report(tmp_path / "resumed") == _report(tmp_path / "clean")
