"""`trajx demo`: end to end, shortened (one seed, T = 3), and how its failures are reported."""

import io
import re

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

import trajx.cli.remote  # noqa: F401  (registers `trajx demo` among the other commands)
from trajx.cli.app import app
from trajx.client import ApiError, ServerUnreachable
from trajx.demo.run import run_demo


@pytest.mark.slow
def test_demo_runs_through_the_service_and_prints_its_table(tmp_path, monkeypatch):
    out = io.StringIO()
    served = []

    def while_kept_up(log):  # instead of waiting for Ctrl-C: the printed dashboard URLs answer
        urls = re.findall(r"dashboard: (http://\S+)/#/jobs/(job_\w+)", out.getvalue())
        key = (tmp_path / "server" / "local-api-key").read_text().strip()
        for base, job_id in urls:
            page = httpx.get(f"{base}/")
            job = httpx.get(f"{base}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})
            served.append((page.status_code, "uPlot" in page.text or "app.js" in page.text, job.json()["status"]))

    monkeypatch.setattr("trajx.demo.run._serve_until_interrupted", while_kept_up)
    rows = run_demo(seeds=(1,), steps=3, data_dir=tmp_path, console=Console(file=out, width=120),
                    keep_serving=True)
    assert served == [(200, True, "succeeded")] * 2  # the naive and the FGMT job

    assert [row.model for row in rows] == ["target init (untrained)", "Naive transfer", "FGMT transfer",
                                           "trained source"]
    assert all(0.0 <= acc <= 1.0 for row in rows for acc in row.accuracies)
    assert rows[-1].mean() > 0.8  # the source really trained
    assert all(row.seconds is not None and row.seconds > 0 for row in rows[1:])
    assert "FGMT transfer" in out.getvalue()
    assert (tmp_path / "results" / "fgmt" / "target-0" / "last.safetensors").exists()


@pytest.mark.parametrize("error, exit_code", [
    (ServerUnreachable("cannot reach http://127.0.0.1:1: connection refused"), 5),
    (ApiError(422, "spec_invalid", "params.steps: too large", {"code": "spec_invalid"}), 2),
])
def test_demo_reports_a_client_error_with_its_exit_code(monkeypatch, error, exit_code):
    def failing_demo(*args, **kwargs):
        raise error

    monkeypatch.setattr("trajx.demo.run.run_demo", failing_demo)

    result = CliRunner().invoke(app, ["demo", "--seed", "1", "--steps", "3"])

    assert result.exit_code == exit_code, result.output
    assert f"demo failed talking to its server: {error}" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
