"""End to end on the embedded default: `trajx serve` (SQLite, local files, embedded worker)."""

import time
from collections.abc import Iterator

import pytest
from safetensors.torch import load_file

from tests.support.digits import digits_spec
from trajx.client import Client
from trajx.demo.server import EmbeddedServer
from trajx.demo.source import accuracy

pytestmark = pytest.mark.slow

FAST_RECOVERY = {"TRAJX_HEARTBEAT_SECONDS": "0.5", "TRAJX_STALE_SECONDS": "2"}


@pytest.fixture
def server(tmp_path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path / "server", env=FAST_RECOVERY) as server:
        yield server


def test_digits_jobs_on_the_embedded_default(server, digits, tmp_path):
    with Client(server.url, server.api_key) as client:
        ids = digits.upload(client)
        jobs = {m: client.create_job(digits_spec(ids, m)) for m in ("fgmt", "naive")}
        done = {m: client.wait(job.id, timeout=120, poll_interval=0.1) for m, job in jobs.items()}
        accuracies = {}
        for method, job in done.items():
            assert job.status == "succeeded", job.error
            path = client.download_result(job.result_file("last", 0), tmp_path / method)
            accuracies[method] = accuracy(load_file(path), digits.split)
    assert accuracies["fgmt"] > accuracies["naive"] + 0.1, accuracies  # measured here: 0.78 vs 0.54


def test_restarting_the_server_mid_job_loses_nothing(digits, tmp_path):
    data_dir = tmp_path / "server"
    with EmbeddedServer(data_dir, env=FAST_RECOVERY) as server, Client(server.url, server.api_key) as client:
        job = client.create_job(digits_spec(digits.upload(client), steps=40, grad_batches=4))
        _wait_running(client, job.id)
        port = server.port
    # SIGTERM reached the embedded worker too: it handed the job back to the queue.
    with EmbeddedServer(data_dir, port=port, env=FAST_RECOVERY) as server, \
            Client(server.url, server.api_key) as client:
        job = client.wait(job.id, timeout=120, poll_interval=0.2)
        types = [e.type for e in client.events(job.id)]
    assert job.status == "succeeded", job.error
    assert job.attempts == 1
    assert types.count("started") == 2 and "released" in types


def _wait_running(client: Client, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job.status == "running" and (job.progress.step or 0) >= 1:
            return
        assert not job.done, job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never started")
