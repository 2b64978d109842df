"""A seeded job gives byte-identical result files, run after run (DESIGN: bit-identical results).

Each run is a separate `trajx run` process, as two workers would be: safetensors keeps its
metadata in a per-process randomly ordered map, so one process alone could hide the bug.
The report's timings are the one thing expected to differ between runs.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.engine_setups import MLP, mlp_setup
from trajx.engine.transfer.gmt import STEP_TIMING_KEYS

pytestmark = pytest.mark.slow


def _run(spec_file: Path, out: Path) -> dict[str, str]:
    """sha256 of every file `trajx run` writes, by path relative to `out`."""
    subprocess.run([sys.executable, "-c", "from trajx.cli import main; main()", "run", str(spec_file), "--out", str(out), "--json"],
                   check=True, capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


# What a stopwatch measures: per-step seconds, the run's total, its timings block (with peak memory).
TIMING_KEYS = {*STEP_TIMING_KEYS, "seconds", "timings"}


def _without_timings(document):
    """A JSON document less every TIMING_KEYS entry, at any depth."""
    if isinstance(document, dict):
        return {k: _without_timings(v) for k, v in document.items() if k not in TIMING_KEYS}
    if isinstance(document, list):
        return [_without_timings(v) for v in document]
    return document


def test_two_runs_of_a_seeded_spec_write_identical_bytes(tmp_path):
    mlp_setup().write(tmp_path)
    spec = {"method": "fgmt", "arch": {"name": MLP[0], "config": MLP[1]},
            "source": ["theta0.safetensors", "thetaT.safetensors"],
            "targets": [{"seed": 1}, {"seed": 2}], "train_data": "train.safetensors",
            "eval_data": "test.safetensors", "outputs": {"permutations": True, "trajectory": True},
            "params": {"steps": 3, "seed": 7, "device": "cpu"}}
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(spec))

    first, second = _run(spec_file, tmp_path / "run1"), _run(spec_file, tmp_path / "run2")

    checkpoints = [name for name in first if name.endswith(".safetensors")]
    assert len(checkpoints) == 8  # last, best, permutations, trajectory for two targets
    assert {name: first[name] for name in checkpoints} == {name: second[name] for name in checkpoints}
    reports = sorted(set(first) - set(checkpoints))
    assert reports == ["report.json", "target-0/metrics.json", "target-1/metrics.json"]
    for name in reports:
        documents = [json.loads((tmp_path / run / name).read_text()) for run in ("run1", "run2")]
        assert documents[0] != documents[1]  # the timings differ ...
        assert _without_timings(documents[0]) == _without_timings(documents[1])  # ... nothing else
