"""`trajx serve` stops promptly although a client follows a running job's event stream."""

import threading
import time

import httpx

from tests.support.files import data_shard, mlp_checkpoint
from trajx.demo.server import EmbeddedServer

# θ⁰, θᵀ and a data shard for an `mlp` 8 → 16 → 3.
FILES = [("theta0.safetensors", mlp_checkpoint(fill=0)), ("thetaT.safetensors", mlp_checkpoint(fill=1)),
         ("train.safetensors", data_shard())]


def test_an_open_event_stream_does_not_hold_up_the_servers_shutdown(tmp_path):
    # No worker: the job stays queued, so its stream would stay open for as long as it lasts.
    with EmbeddedServer(tmp_path / "server", env={"TRAJX_DISPATCHER": "none"}) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        ids = [httpx.post(f"{server.url}/v1/artifacts", params={"name": name}, content=content,
                          headers={**headers, "Content-Type": "application/octet-stream"}).json()["id"]
               for name, content in FILES]
        created = httpx.post(f"{server.url}/v1/jobs", headers=headers, json={"spec": {
            "method": "fgmt", "arch": {"name": "mlp", "config": {"in_features": 8, "hidden": [16], "num_classes": 3}},
            "source": ids[:2], "targets": [{"seed": 1}], "train_data": ids[2]}})
        assert created.status_code == 202, created.text
        job = created.json()
        ended = threading.Event()

        def follow():
            with httpx.stream("GET", f"{server.url}/v1/jobs/{job['id']}/events", timeout=60,
                              headers={**headers, "Accept": "text/event-stream"}) as stream:
                for _ in stream.iter_lines():
                    pass
            ended.set()

        threading.Thread(target=follow, daemon=True).start()
        time.sleep(1.0)
        assert not ended.is_set()  # the stream is open
        started = time.monotonic()
        server.stop(timeout=30)
        # uvicorn would wait for the open stream; the server ends it at its next poll instead.
        assert time.monotonic() - started < 10
        assert ended.wait(5)
