"""The readable CLI against a real embedded server: jobs at 80 columns, events (followed
over server-sent events), status with per-step accuracy, reattaching, version, completion,
architectures."""

import json

import pytest

from tests.cli.conftest import write_spec
from trajx import __version__

pytestmark = pytest.mark.slow


def test_version_and_shell_completion(cli):
    version = cli("--version")
    assert (version.code, version.stdout.strip()) == (0, f"trajx {__version__}")
    # The script `trajx --install-completion` installs, for a named shell (no detection)...
    script = cli("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.code == 0 and "_TRAJX_COMPLETE" in script.stdout
    # ...and the answers it gets: command names, then their options.
    words = {"_TRAJX_COMPLETE": "complete_bash", "COMP_WORDS": "trajx jo", "COMP_CWORD": "1"}
    assert cli(env=words).stdout.split() == ["jobs"]
    assert "--status" in cli(env={**words, "COMP_WORDS": "trajx jobs --st", "COMP_CWORD": "2"}).stdout.split()


def test_submit_says_when_it_reattached(cli, inputs_dir, tmp_path):
    spec = write_spec(tmp_path, inputs_dir, targets=[{"seed": 21}])
    first = cli("submit", str(spec), "--idempotency-key", "readable-1")
    again = cli("submit", str(spec), "--idempotency-key", "readable-1", "--wait", "--json")
    assert first.code == again.code == 0, first.stderr + again.stderr
    assert "submitted job_" in first.stderr and "reattached" not in first.stderr
    assert "reattached to job_" in again.stderr and "readable-1" in again.stderr
    assert again.json()["reattached"] is True and again.json()["job"]["status"] == "succeeded"


def test_events_follow_status_and_jobs_read_well_at_80_columns(cli, inputs_dir, tmp_path):
    spec = write_spec(tmp_path, inputs_dir, targets=[{"seed": 22}, {"seed": 23}],
                      eval_data=str(inputs_dir / "heldout.safetensors"))
    job_id = cli("submit", str(spec), "--json").json()["job"]["id"]
    narrow = {"COLUMNS": "80"}

    followed = cli("events", job_id, "--follow", env=narrow)  # over SSE; returns when the job ends
    assert followed.code == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert lines[0].split()[1] == "created" and lines[-1].split()[1] == "succeeded"
    assert any("progress" in line and "accuracy" in line and "%" in line for line in lines)
    assert "{" not in followed.stdout  # readable lines, not raw JSON

    status = cli("status", job_id, env=narrow)
    assert status.code == 0, status.stderr
    assert "held-out accuracy per step" in status.stdout
    sparks = [line for line in status.stdout.splitlines() if any(c in line for c in "▁▂▃▄▅▆▇█")]
    assert len(sparks) == 2  # one line per target
    assert all(len(line.split()[1]) == 3 for line in sparks)  # steps=3: one character per step

    listed = cli("jobs", env=narrow)
    assert listed.code == 0, listed.stderr
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    assert job_id in listed.stdout and "transfer · fgmt · mlp" in listed.stdout
    assert "succeeded" in listed.stdout and "succe…" not in listed.stdout


def test_architectures_lists_built_ins_with_config_keys(cli):
    table = cli("architectures", env={"COLUMNS": "80"})
    assert table.code == 0 and "mlp" in table.stdout and "built-in" in table.stdout
    found = {a["name"]: a for a in json.loads(cli("architectures", "--json").stdout)["data"]}
    assert {"mlp", "cnn", "resnet", "transformer"} <= set(found)
    mlp_keys = {k["key"]: k for k in found["mlp"]["config"]}
    assert mlp_keys["in_features"]["required"] is True and mlp_keys["activation"]["default"] == "relu"
