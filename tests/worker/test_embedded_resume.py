"""Issue 25.6: `trajx serve` and its worker killed mid-job (SIGKILL, as a host restart);
the next start resumes the job after the step it reached, byte-identical to a clean run."""

import os
import signal
import time

import pytest

from tests.support.digits import digits_spec
from trajx.client import Client, Job
from trajx.demo.server import EmbeddedServer

pytestmark = pytest.mark.slow

LONG = {"steps": 12, "grad_batches": 2}


def _checkpoints(job: Job) -> dict[tuple[int | None, str], str]:
    return {(f.target, f.role): f.sha256 for f in job.files if f.path.endswith(".safetensors")}


def test_a_restarted_server_resumes_its_job_after_the_step_it_reached(digits, tmp_path):
    data_dir = tmp_path / "server"
    with EmbeddedServer(data_dir) as server, Client(server.url, server.api_key) as client:
        ids = digits.upload(client)
        clean = client.wait(client.create_job(digits_spec(ids, **LONG)).id, timeout=120, poll_interval=0.1).id
        job = client.create_job(digits_spec(ids, **LONG))
        deadline = time.monotonic() + 60
        while (reached := client.get_job(job.id).progress.step or 0) < 3:
            assert time.monotonic() < deadline, "the job never got going"
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGKILL)  # the API and its worker at once: nothing is handed back
        server.stop()
    with EmbeddedServer(data_dir) as server, Client(server.url, server.api_key) as client:
        done = client.wait(job.id, timeout=120, poll_interval=0.1)
        assert done.status == "succeeded", done.error
        events = client.events(job.id)
        resumed = [e.data for e in events if e.type == "resumed"]
        assert len(resumed) == 1 and resumed[0]["step"] >= reached - 1, (resumed, reached)
        assert "released" not in [e.type for e in events]  # it was lost, not handed back
        assert _checkpoints(done) == _checkpoints(client.get_job(clean))
