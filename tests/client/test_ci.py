"""Run-derived idempotency keys and GitHub Actions outputs."""

from trajx.client.ci import default_idempotency_key, spec_hash, write_github_outputs
from trajx.client.models import Job

GITHUB = {"GITHUB_RUN_ID": "123", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "transfer", "GITHUB_ACTION": "submit"}


def test_no_key_outside_ci():
    assert default_idempotency_key({"a": 1}, environ={}) is None


def test_key_is_stable_for_a_retried_step_and_changes_with_the_spec():
    first = default_idempotency_key({"a": 1, "b": [1, 2]}, environ=GITHUB)
    assert first == default_idempotency_key({"b": [1, 2], "a": 1}, environ=GITHUB)
    assert first.startswith("gh-123-1-transfer-submit-")
    assert first != default_idempotency_key({"a": 2, "b": [1, 2]}, environ=GITHUB)
    assert first != default_idempotency_key({"a": 1, "b": [1, 2]}, environ={**GITHUB, "GITHUB_RUN_ATTEMPT": "2"})


def test_spec_hash_ignores_formatting():
    assert spec_hash({"x": 1, "y": "é"}) == spec_hash({"y": "é", "x": 1})


def test_github_outputs_and_step_summary(tmp_path):
    job = Job.from_dict({
        "id": "job_1", "status": "succeeded",
        "result": {"files": [_file("target-0/last.safetensors", "last", 0, "art_1"),
                             _file("target-0/best.safetensors", "best", 0, "art_2"),
                             _file("report.json", "report", None, "art_3")]},
        "summary": {"targets": [{"last_accuracy": 0.91234, "best_accuracy": 0.95, "best_step": 7}]},
    })
    env = {"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}
    write_github_outputs(job, {"report.json": "/tmp/r.json"}, environ=env)

    outputs = dict(line.split("=", 1) for line in (tmp_path / "out").read_text().splitlines())
    assert outputs["job-id"] == "job_1" and outputs["status"] == "succeeded" and outputs["error-code"] == ""
    assert outputs["artifact-ids"] == ('{"target-0/last.safetensors":"art_1",'
                                       '"target-0/best.safetensors":"art_2","report.json":"art_3"}')
    summary = (tmp_path / "summary").read_text()
    assert "job_1" in summary and "| 0 | 0.9123 | 0.9500 | 7 |" in summary


def _file(path: str, role: str, target: int | None, artifact: str) -> dict:
    return {"path": path, "role": role, "target": target, "sha256": "0" * 64, "size": 1, "metadata": {},
            "artifact": artifact}


def test_nothing_written_outside_github(tmp_path):
    write_github_outputs(Job.from_dict({"id": "job_1", "status": "failed"}), environ={})
    assert list(tmp_path.iterdir()) == []
