"""`trajx run|init|describe` through Typer's runner: outputs, files and exit codes."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import trajx.cli.local  # noqa: F401  (registers the commands)
from tests.support.engine_setups import MLP, mlp_setup
from trajx.cli.app import app
from trajx.cli.local import _file_resolver
from trajx.errors import InvalidInput
from trajx.io import load_tensors

runner = CliRunner()
CONFIG = json.dumps(MLP[1])


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("job")
    mlp_setup().write(directory)
    spec = {"method": "fgmt", "arch": {"name": MLP[0], "config": MLP[1]},
            "source": ["theta0.safetensors", "thetaT.safetensors"],  # relative to the spec file
            "targets": [{"seed": 1}], "train_data": "train.safetensors", "eval_data": "test.safetensors",
            "params": {"steps": 3, "device": "cpu"}}
    path = directory / "job.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.slow
def test_run_writes_results_and_prints_a_summary(spec_file, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(spec_file), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == "fgmt" and summary["targets"][0]["best_step"] >= 1
    assert (out / "target-0" / "last.safetensors").exists() and (out / "report.json").exists()
    table = runner.invoke(app, ["run", str(spec_file), "--out", str(tmp_path / "again")])
    assert table.exit_code == 0 and "last_accuracy" in table.stdout and "report.json" in table.stdout


def test_run_refuses_a_non_empty_output_directory(spec_file, tmp_path):
    (tmp_path / "junk").write_text("x")
    result = runner.invoke(app, ["run", str(spec_file), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "empty" in result.stderr


def test_run_reports_invalid_specs_and_missing_files_with_exit_2(spec_file, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"arch": {"name": "mlp"}, "source": ["a"], "targets": [], "train_data": "x"}))
    result = runner.invoke(app, ["run", str(bad), "--out", str(tmp_path / "o1")])
    assert result.exit_code == 2 and "invalid job spec" in result.stderr
    missing = json.loads(spec_file.read_text()) | {"train_data": "nowhere.safetensors"}
    moved = spec_file.parent / "missing.json"
    moved.write_text(json.dumps(missing))
    result = runner.invoke(app, ["run", str(moved), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "train_data" in result.stderr and "artifact_not_found" in result.stderr


def test_init_writes_the_seeded_initialization(tmp_path):
    out = tmp_path / "init.safetensors"
    result = runner.invoke(app, ["init", "--arch", "mlp", "--config", CONFIG, "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    from trajx.engine.zoo import init_state_dict

    expected = init_state_dict(*MLP, 4)
    written = load_tensors(out, "init")
    assert all(torch.equal(written[n], expected[n]) for n in expected)


def test_init_with_an_unknown_architecture_or_bad_json_exits_2(tmp_path):
    out = str(tmp_path / "x.safetensors")
    unknown = runner.invoke(app, ["init", "--arch", "nope", "--config", "{}", "--seed", "0", "--out", out])
    assert unknown.exit_code == 2 and "nope" in unknown.stderr
    broken = runner.invoke(app, ["init", "--arch", "mlp", "--config", "{", "--seed", "0", "--out", out])
    assert broken.exit_code == 2 and "JSON" in broken.stderr


def test_describe_lists_parameters_and_groups(tmp_path):
    result = runner.invoke(app, ["describe", "--arch", "mlp", "--config", CONFIG, "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    by_name = {p["name"]: p for p in described["parameters"]}
    assert by_name["blocks.0.fc.weight"]["shape"] == [128, 64]
    assert by_name["blocks.0.fc.weight"]["groups"][1] is None
    assert len(described["groups"]) == 2 and all(g["size"] == 128 for g in described["groups"])
    tables = runner.invoke(app, ["describe", "--arch", "mlp", "--config", CONFIG])
    assert tables.exit_code == 0 and "permutation groups" in tables.stdout


def test_run_resolves_a_folder_ref_for_a_hugging_face_checkpoint(tmp_path):
    (tmp_path / "theta0").mkdir()  # what save_pretrained writes, sharded or not
    resolve = _file_resolver(tmp_path, {"source[0]": "theta0", "source[1]": "missing"})
    assert resolve("theta0") == tmp_path / "theta0"
    with pytest.raises(InvalidInput, match="source\\[1\\]: file .* not found"):
        resolve("missing")
