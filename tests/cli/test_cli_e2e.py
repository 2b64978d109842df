"""The `trajx` remote commands end to end against a real embedded server.

Exit codes: 0 success, 1 job failed, 2 usage/invalid input, 3 cancelled, 4 wait
timed out, 5 server unreachable, 6 unexpected error; `--json` puts exactly one
document on stdout.
"""

import hashlib
import json
import pickle
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.cli.conftest import write_spec
from trajx.client import Client
from trajx.demo.server import free_port

pytestmark = pytest.mark.slow

GITHUB_RUN = {"GITHUB_RUN_ID": "987", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "transfer", "GITHUB_ACTION": "submit"}


@pytest.mark.parametrize("store_backend", ["local", "s3"])
def test_submit_wait_download_succeeds_with_github_outputs(cli, inputs_dir, tmp_path):
    spec = write_spec(tmp_path, inputs_dir)
    outputs, summary = tmp_path / "gh-output", tmp_path / "gh-summary"

    result = cli("submit", str(spec), "--wait", "--timeout", "90", "--download", "results", "--json",
                 env={"GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary)})

    assert result.code == 0, result.stderr
    doc = result.json()
    job = doc["job"]
    assert job["status"] == "succeeded"
    assert set(doc["uploaded"]) == {"source[0]", "source[1]", "train_data"}
    assert job["spec"]["source"] == [doc["uploaded"]["source[0]"], doc["uploaded"]["source[1]"]]
    last = load_file(tmp_path / "results" / "target-0" / "last.safetensors")
    assert set(last) == set(load_file(inputs_dir / "theta0.safetensors"))
    assert json.loads((tmp_path / "results" / "report.json").read_text())
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert written["job-id"] == job["id"] and written["status"] == "succeeded"
    assert json.loads(written["artifact-ids"])["target-0/last.safetensors"] == job["result"]["targets"][0]["last"]
    assert job["id"] in summary.read_text()


def test_submit_converts_a_pt_target_and_uploads_it(cli, inputs_dir, tmp_path):
    torch.save(load_file(inputs_dir / "theta0.safetensors"), tmp_path / "my_init.pt")
    spec = write_spec(tmp_path, inputs_dir, targets=[{"checkpoint": "my_init.pt"}])

    result = cli("submit", str(spec), "--json")

    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["job"]["spec"]["targets"][0]["checkpoint"] == doc["uploaded"]["targets[0].checkpoint"]


def test_submit_maps_a_training_checkpoint_and_says_how(cli, inputs_dir, tmp_path):
    # A DDP run's checkpoint: the state dict under "model", every name prefixed "module.".
    state = load_file(inputs_dir / "theta0.safetensors")
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ddp.pt")
    spec = write_spec(tmp_path, inputs_dir, targets=[{"checkpoint": "ddp.pt"}])

    result = cli("submit", str(spec), "--wait", "--json")

    assert result.code == 0, result.stderr
    assert "ddp.pt: took the state dict under 'model'" in result.stderr
    assert "stripped 'module.'" in result.stderr
    assert result.json()["job"]["status"] == "succeeded"


def test_a_wrongly_prefixed_checkpoint_fails_naming_the_prefix_to_strip(cli, inputs_dir, tmp_path):
    state = load_file(inputs_dir / "theta0.safetensors")
    save_file({f"net.{k}": v for k, v in state.items()}, tmp_path / "net.safetensors")
    spec = write_spec(tmp_path, inputs_dir, targets=[{"checkpoint": "net.safetensors"}])

    refused = cli("submit", str(spec), "--wait", "--json")  # the API compares it with source[0]
    assert refused.code == 2
    error = refused.json()["error"]
    assert error["code"] == "checkpoint_mismatch" and "--strip-prefix net." in error["detail"]

    fixed = cli("submit", str(spec), "--wait", "--json", "--strip-prefix", "net.")
    assert fixed.code == 0, fixed.stderr


def test_invalid_spec_is_refused_locally_with_exit_2(cli, inputs_dir, tmp_path):
    spec = write_spec(tmp_path, inputs_dir, mehtod="fgmt")  # a typo'd field

    result = cli("submit", str(spec), "--json")

    assert result.code == 2
    assert result.json()["error"]["code"] == "invalid_local_input"
    assert "mehtod" in result.json()["error"]["detail"]


def test_problem_answer_from_server_exits_2_with_its_code(cli, inputs_dir, tmp_path):
    spec = write_spec(tmp_path, inputs_dir, train_data="art_" + "0" * 32)

    result = cli("submit", str(spec), "--json")

    assert result.code == 2
    error = result.json()["error"]
    assert error["status"] == 422 and error["code"]
    assert "train_data" in json.dumps(error)


def test_job_failing_on_the_worker_exits_1(cli, inputs_dir, tmp_path):
    spec = write_spec(tmp_path, inputs_dir, train_data=str(inputs_dir / "bad_targets.safetensors"))

    result = cli("submit", str(spec), "--wait", "--timeout", "90", "--json")

    assert result.code == 1, result.stderr
    job = result.json()["job"]
    assert job["status"] == "failed"
    assert job["error"]["code"] == "target_out_of_range"


def test_wait_timeout_exits_4_then_cancel_and_wait_exits_3(cli, inputs_dir, tmp_path):
    long_params = {"steps": 1000, "batch_size": 64, "grad_batches": 20, "device": "cpu"}
    spec = write_spec(tmp_path, inputs_dir, params=long_params)

    timed_out = cli("submit", str(spec), "--wait", "--timeout", "1", "--json")

    assert timed_out.code == 4, timed_out.stderr
    doc = timed_out.json()
    assert doc["error"]["code"] == "wait_timeout"
    job_id = doc["job"]["id"]
    assert cli("cancel", job_id, "--json").code == 0
    waited = cli("wait", job_id, "--timeout", "60", "--json")
    assert waited.code == 3, waited.stderr
    assert waited.json()["job"]["status"] == "cancelled"


def test_retried_ci_step_reattaches_to_the_same_job(cli, inputs_dir, tmp_path):
    spec = write_spec(tmp_path, inputs_dir, targets=[{"seed": 7}])

    first = cli("submit", str(spec), "--json", env=GITHUB_RUN)
    retried = cli("submit", str(spec), "--json", env=GITHUB_RUN)
    next_attempt = cli("submit", str(spec), "--json", env={**GITHUB_RUN, "GITHUB_RUN_ATTEMPT": "2"})

    assert first.code == retried.code == next_attempt.code == 0
    assert first.json()["job"]["id"] == retried.json()["job"]["id"]
    assert next_attempt.json()["job"]["id"] != first.json()["job"]["id"]
    explicit = [cli("submit", str(spec), "--json", "--idempotency-key", "fixed-key").json()["job"]["id"]
                for _ in range(2)]
    assert explicit[0] == explicit[1]


def _uploaded_blob(server, tmp_path):
    blob = tmp_path / "blob.safetensors"
    save_file({"w": torch.arange(600_000, dtype=torch.float32)}, str(blob))
    with Client(server.url, server.api_key) as client:
        return blob, client.upload(blob)


def test_download_resumes_a_partial_file_and_verifies_it(cli, server, tmp_path):
    blob, artifact = _uploaded_blob(server, tmp_path)
    data = blob.read_bytes()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "blob.safetensors.part").write_bytes(data[: len(data) // 3])

    result = cli("download", artifact.id, "--out", "out", "--json")

    assert result.code == 0, result.stderr
    got = (tmp_path / "out" / "blob.safetensors").read_bytes()
    assert hashlib.sha256(got).hexdigest() == artifact.sha256
    assert not (tmp_path / "out" / "blob.safetensors.part").exists()


def test_download_with_a_corrupt_partial_file_starts_over_and_a_rerun_keeps_the_file(cli, server, tmp_path):
    _, artifact = _uploaded_blob(server, tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "blob.safetensors.part").write_bytes(b"\0" * 1000)  # not the artifact's first bytes
    dest = tmp_path / "out" / "blob.safetensors"

    first = cli("download", artifact.id, "--out", "out", "--json")
    written_at = dest.stat().st_mtime_ns
    retried = cli("download", artifact.id, "--out", "out", "--json")  # a retried CI step

    assert first.code == 0, first.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == artifact.sha256
    assert not (tmp_path / "out" / "blob.safetensors.part").exists()
    assert retried.code == 0, retried.stderr
    assert retried.json()["downloads"] == first.json()["downloads"]
    assert dest.stat().st_mtime_ns == written_at  # already there with the right sha256: not rewritten


def test_local_file_error_exits_2_with_a_json_document(cli, server, tmp_path):
    _, artifact = _uploaded_blob(server, tmp_path)
    (tmp_path / "out").write_text("a file where the download directory should be")

    result = cli("download", artifact.id, "--out", "out", "--json")

    assert result.code == 2, result.stderr
    error = result.json()["error"]
    assert error["code"] == "local_file_error" and "out" in error["detail"]


class _MalformedApi(BaseHTTPRequestHandler):
    """Answers every GET with a 200 document that is not a job: the CLI cannot make sense of it."""

    def do_GET(self):
        body = json.dumps({"unexpected": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_unexpected_error_exits_6_with_an_internal_error_document(cli):
    with HTTPServer(("127.0.0.1", 0), _MalformedApi) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            result = cli("status", "job_x", "--json", "--url", f"http://127.0.0.1:{httpd.server_port}")
        finally:
            httpd.shutdown()

    assert result.code == 6, result.stderr
    assert result.json()["error"]["code"] == "internal_error"
    assert "Traceback" in result.stderr  # for the bug report, on stderr only


class _Marker:
    """Unpickled unsafely, this would create the marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_upload_converts_a_state_dict_and_refuses_a_malicious_pickle(cli, tmp_path):
    torch.save({"fc.weight": torch.randn(3, 2)}, tmp_path / "good.pt")
    marker = tmp_path / "executed"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"fc.weight": _Marker(marker)}, f, protocol=2)

    good = cli("upload", "good.pt", "--json")
    evil = cli("upload", "evil.pt", "--json")

    assert good.code == 0, good.stderr
    assert good.json()["data"][0]["name"] == "good.safetensors"
    assert good.json()["data"][0]["tensors"] == [{"name": "fc.weight", "dtype": "F32", "shape": [3, 2]}]
    assert evil.code == 2
    assert "evil.pt" in evil.json()["error"]["detail"]
    assert not marker.exists()


def test_wrong_api_key_exits_2_and_unreachable_server_exits_5(cli):
    denied = cli("jobs", "--json", "--api-key", "trx_not_a_key")
    unreachable = cli("jobs", "--json", "--url", f"http://127.0.0.1:{free_port()}")

    assert denied.code == 2 and denied.json()["error"]["status"] == 401
    assert unreachable.code == 5 and unreachable.json()["error"]["code"] == "server_unreachable"


def test_listing_commands_print_one_document(cli, server, inputs_dir, tmp_path):
    spec = write_spec(tmp_path, inputs_dir, targets=[{"seed": 11}])
    job_id = cli("submit", str(spec), "--json").json()["job"]["id"]

    followed = cli("events", job_id, "--follow", "--json")  # returns once the job has finished
    listed = cli("jobs", "--json")
    status = cli("status", job_id, "--json")
    events = cli("events", job_id, "--json")

    assert [e["type"] for e in followed.json()["data"]][-1] == "succeeded"
    assert job_id in [job["id"] for job in listed.json()["data"]]
    assert status.json()["job"]["status"] == "succeeded"
    assert events.json()["data"] == followed.json()["data"]
    assert events.json()["data"][0]["type"] == "created"
