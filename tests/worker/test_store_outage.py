"""The object store goes away mid-run (issue 27, item 5): a private SeaweedFS server is
frozen (SIGSTOP) for a few seconds while an upload streams, a download and a readiness
probe are asked for, and a job fetches its inputs. Clients get 503 with Retry-After, the
worker retries, nothing partial becomes visible, and the job finishes once it is back."""

import os
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from app.core.storage.errors import StorageUnavailable
from app.main import create_app
from tests.conftest import s3_settings, service_unavailable
from tests.support import seaweedfs
from tests.support.files import mlp_checkpoint
from tests.support.http import stored_files, upload
from tests.support.jobs import submit_job, upload_file
from tests.support.rows import load_job
from tests.worker.test_job_kinds import scale_kind  # noqa: F401 - the toy job kind, as a fixture
from worker.context import worker_context
from worker.runner import run_job

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
OUTAGE_SECONDS = 4.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A private server (the shared one must not freeze under other tests), one per module."""
    try:
        running = seaweedfs.SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start(timeout=120)
    except (FileNotFoundError, RuntimeError) as exc:
        service_unavailable(f"no private SeaweedFS: {exc}")
    yield running
    running.stop()


@pytest.fixture
def outage_settings(settings, server, tmp_path):
    for name, value in seaweedfs.CREDENTIALS.items():
        os.environ.setdefault(name, value)
    bucket = seaweedfs.new_bucket(server.endpoint)
    # A fresh server's first write allocates its volumes, which can take seconds: not in the test.
    seaweedfs.s3_client(server.endpoint).put_object(Bucket=bucket, Key="warm-up", Body=b"x")
    # Short timeouts and no client-side retries: each call to a frozen server fails in 2 s.
    return settings.model_copy(update={**s3_settings(server.endpoint, bucket, tmp_path), "s3_timeout_seconds": 2.0,
                                       "s3_max_attempts": 1, "storage_retry_seconds": 60.0})


def test_clients_get_503_and_nothing_partial_is_left(outage_settings, server, tenant):
    store = worker_context(outage_settings).store
    app = create_app(outage_settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        kept = upload(client, tenant, mlp_checkpoint()).json()
        frozen = threading.Event()

        def body():
            yield b"\0" * (6 * 1024**2)  # one 5 MiB part goes out...
            server.pause()  # ...then the store freezes mid-upload
            frozen.set()
            yield b"\1" * (6 * 1024**2)

        cut = client.post("/v1/artifacts?name=big.bin", content=body(), headers=tenant.headers)
        assert frozen.is_set()
        assert cut.status_code == 503 and cut.json()["code"] == "storage_unavailable"
        assert int(cut.headers["retry-after"]) > 0
        download = client.get(f"/v1/artifacts/{kept['id']}/content", headers=tenant.headers)
        assert download.status_code == 503 and download.headers["retry-after"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "storage_unavailable"
        server.resume()

        assert client.get(f"/v1/artifacts/{kept['id']}/content", headers=tenant.headers).content == \
            mlp_checkpoint()
    app.state.services.engine.dispose()
    # Only the kept blob is visible; the cut upload left at most its unfinished multipart
    # upload (its abort met the frozen store), which the sweep removes.
    store.stale_upload_seconds = 0
    store.sweep()
    assert stored_files(store) == [store.key(kept["sha256"])]


def test_a_job_waits_out_the_outage_and_finishes(outage_settings, server, scale_kind, tenant_id, tmp_path):  # noqa: F811
    weights = {"w": torch.arange(6, dtype=torch.float32)}
    save_file(weights, str(tmp_path / "w.safetensors"))
    uploaded = upload_file(outage_settings, tenant_id, tmp_path / "w.safetensors")
    job_id = submit_job(outage_settings, tenant_id, {"kind": "scale", "checkpoint": uploaded, "factor": 2.0})
    server.pause()
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(run_job(job_id, outage_settings)))
    worker.start()
    time.sleep(OUTAGE_SECONDS)
    assert worker.is_alive()  # retrying its input, not failed
    server.resume()
    worker.join(60)
    assert outcome == ["succeeded"]
    (result,) = load_job(outage_settings, job_id).result["files"]
    assert worker_context(outage_settings).store.exists(result["sha256"])


def test_a_job_outlasting_its_retries_is_given_back_not_failed(outage_settings, server, scale_kind,  # noqa: F811
                                                               tenant_id, tmp_path):
    save_file({"w": torch.ones(3)}, str(tmp_path / "w.safetensors"))
    uploaded = upload_file(outage_settings, tenant_id, tmp_path / "w.safetensors")
    job_id = submit_job(outage_settings, tenant_id, {"kind": "scale", "checkpoint": uploaded, "factor": 2.0})
    impatient = outage_settings.model_copy(update={"storage_retry_seconds": 0.0})
    server.pause()
    try:
        with pytest.raises(StorageUnavailable):
            run_job(job_id, impatient)
    finally:
        server.resume()
    # Not failed: it keeps its claim until the heartbeat goes stale, then recovery re-runs it.
    job = load_job(outage_settings, job_id)
    assert (job.status, job.error_code) == ("running", None)
