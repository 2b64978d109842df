"""Each mistake a new user makes, fed to the real `trajx` command: the message names the
problem in the project's words (the field, the local file, the fix) once, with a
did-you-mean where a near name exists and a hint for setup mistakes."""

import json
import os

import pytest
from safetensors.torch import save_file

from tests.cli.conftest import ARCH, write_spec

pytestmark = pytest.mark.slow  # a dozen `trajx` processes against a real server

PYDANTIC_LEAKS = ("Value error", "Extra inputs", ": :", "- :", "[object")


def assert_plain(stderr: str) -> None:
    assert not any(leak in stderr for leak in PYDANTIC_LEAKS), stderr


@pytest.mark.parametrize(("override", "wanted"), [
    ({"arch": {"name": "mpl", "config": ARCH["config"]}}, ["arch.name", "did you mean 'mlp'"]),
    ({"arch": {"name": "mlp", "config": {**ARCH["config"], "hiden": [8]}}},
     ["arch.config.hiden", "did you mean 'hidden'"]),
    ({"method": "fgtm"}, ["method", "did you mean 'fgmt'"]),
    ({"parms": {"steps": 3}}, ["parms", "did you mean 'params'"]),
])
def test_spec_mistakes_get_did_you_mean_before_anything_is_uploaded(cli, inputs_dir, tmp_path, override, wanted):
    result = cli("submit", str(write_spec(tmp_path, inputs_dir, **override)))
    assert result.code == 2, result.stderr
    assert all(text in result.stderr for text in wanted), result.stderr
    assert_plain(result.stderr)


def test_a_sweep_without_eval_data_names_eval_data(cli, inputs_dir, tmp_path):
    spec = {"kind": "average", "arch": ARCH, "method": {"name": "ema", "decay": 0.5}, "sweep": {"decay": [0.3]},
            "checkpoints": [os.path.relpath(inputs_dir / name, tmp_path) for name in ("theta0.safetensors",
                                                                                      "thetaT.safetensors")],
            "train_data": os.path.relpath(inputs_dir / "train.safetensors", tmp_path)}
    (tmp_path / "average.json").write_text(json.dumps(spec))
    result = cli("submit", str(tmp_path / "average.json"))
    assert result.code == 2 and "eval_data: a sweep chooses on held-out data" in result.stderr, result.stderr
    assert_plain(result.stderr)


def test_a_checkpoint_of_another_shape_names_the_local_file_once(cli, inputs_dir, tmp_path):
    from trajx.engine.zoo import init_state_dict

    save_file(init_state_dict("mlp", {**ARCH["config"], "hidden": [24]}, 0), str(tmp_path / "wide.safetensors"))
    spec = write_spec(tmp_path, inputs_dir, source=[os.path.relpath(inputs_dir / "theta0.safetensors", tmp_path),
                                                    "wide.safetensors"])
    result = cli("submit", str(spec))
    assert result.code == 2 and "checkpoint_mismatch" in result.stderr, result.stderr
    assert "wide.safetensors" in result.stderr and "art_" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "wide.safetensors" in line]
    assert len(lines) == 1, result.stderr  # said once, not once more in a list under it


def test_setup_mistakes_get_a_hint(cli, server, inputs_dir, tmp_path):
    v1 = cli("jobs", "--url", f"{server.url}/v1")
    assert v1.code == 2 and f"hint: --url is the server's address without /v1: try --url {server.url}" in v1.stderr

    tls = cli("jobs", "--url", server.url.replace("http://", "https://"))
    assert tls.code == 5 and "does not speak https" in tls.stderr and f"--url {server.url}" in tls.stderr, tls.stderr

    keyless = cli("jobs", env={"TRAJX_API_KEY": ""})  # no key, no key file here
    assert keyless.code == 2, keyless.stderr
    assert all(text in keyless.stderr for text in ("--api-key", "TRAJX_API_KEY", "local-api-key")), keyless.stderr

    refused = cli("jobs", "--api-key", "trx_wrong")
    assert refused.code == 2 and "refused this API key" in refused.stderr


def test_admin_reads_the_data_dir_and_never_creates_a_stray_database(cli, server, tmp_path):
    elsewhere = cli("admin", "list-keys")  # run from tmp_path: no ./var here
    assert elsewhere.code == 2 and "no database at" in elsewhere.stderr and "TRAJX_DATA_DIR" in elsewhere.stderr
    assert not (tmp_path / "var").exists()
    found = cli("admin", "list-keys", env={"TRAJX_DATA_DIR": str(server.data_dir)})
    assert found.code == 0 and "\tlocal\t" in found.stdout, found.stdout + found.stderr


def test_help_shows_no_bool_type_and_submit_prints_the_dashboard_url(cli, server, inputs_dir, tmp_path):
    help_text = cli("submit", "--help", env={"COLUMNS": "100"}).stdout
    assert "--wait" in help_text and "<bool>" not in help_text

    submitted = cli("submit", str(write_spec(tmp_path, inputs_dir)), "--name", "first try", "--label", "demo")
    assert submitted.code == 0, submitted.stderr
    job_id = submitted.stdout.split("job_")[1].split()[0]
    assert f"dashboard: {server.url}/#/jobs/job_{job_id}" in submitted.stderr
    listed = cli("jobs", "--label", "demo", "--kind", "transfer", "--json").json()
    assert [job["name"] for job in listed["data"]] == ["first try"]


def test_ready_waits_for_a_server_just_started_and_prints_its_key(tmp_path):
    """The README tour's race: `trajx serve &` then reading the key at once."""
    import subprocess

    from trajx.demo.server import free_port, trajx_command

    port, data_dir = free_port(), tmp_path / "fresh"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRAJX_")}, "TRAJX_DATA_DIR": str(data_dir),
           "OMP_NUM_THREADS": "1"}
    serve = subprocess.Popen([*trajx_command(), "serve", "--port", str(port)], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        key = subprocess.run([*trajx_command(), "ready", "--print-key", "--url", f"http://127.0.0.1:{port}"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert key.returncode == 0, key.stderr
        assert key.stdout.strip() == (data_dir / "local-api-key").read_text().strip()
    finally:
        os.killpg(serve.pid, 15)
        serve.wait(timeout=30)
