"""What a crash leaves in the store's tmp/ is swept; what a live process writes is not.

Real processes killed with SIGKILL: the API under uvicorn mid-upload, and a process
holding a job's work directory.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.core.persistence.db import make_engine, make_session_factory
from app.core.settings import Settings
from app.core.storage.temp_files import MIN_AGE_SECONDS, hold, sweep_stale
from tests.conftest import make_tenant
from tests.support.services import api_server

CHUNK = b"\0" * (1024 * 1024)


def _age(path: Path) -> None:
    """Make `path` look as old as an entry left behind a while ago."""
    old = time.time() - 2 * MIN_AGE_SECONDS
    os.utime(path, (old, old))


def _wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_an_upload_interrupted_by_killing_the_api_is_swept_at_the_next_start(sqlite_url, tmp_path):
    settings = Settings(database_url=sqlite_url, data_dir=tmp_path, storage_dir=tmp_path / "artifacts",
                        dispatcher="none", auto_migrate=False, create_local_key=False)
    engine = make_engine(sqlite_url)
    tenant = make_tenant(make_session_factory(engine))
    engine.dispose()
    tmp_dir = settings.storage_dir / "tmp"
    api = api_server(settings, tmp_path).start()
    stalled = threading.Event()

    def body():
        for _ in range(3):
            yield CHUNK
        stalled.wait(60)  # the client stops sending; the server waits for the rest

    def upload():
        try:
            httpx.post(f"{api.url}/v1/artifacts?name=big.safetensors", content=body(), headers=tenant.headers,
                       timeout=60)
        except httpx.TransportError:
            pass  # the server is killed under it

    client = threading.Thread(target=upload)
    client.start()
    try:
        _wait_for(lambda: any(p.stat().st_size >= 2 * len(CHUNK) for p in tmp_dir.glob("upload-*")),
                  "the upload never reached the temp directory")
        (partial,) = tmp_dir.glob("upload-*")
        _age(partial)
        assert sweep_stale(tmp_dir).entries == 0 and partial.exists()  # a live upload is never swept

        api.stop(signal.SIGKILL)
        assert partial.exists()  # what the crash left behind
        _age(partial)
        api.start()
        assert list(tmp_dir.iterdir()) == []
    finally:
        stalled.set()
        client.join()
        api.stop()


def test_a_job_directory_of_a_killed_process_is_swept_and_a_live_one_is_not(tmp_path):
    script = ("import sys, time\nfrom pathlib import Path\nfrom app.core.storage.temp_files import work_dir\n"
              f"with work_dir(Path({str(tmp_path)!r}), 'job_x-') as path:\n"
              "    (path / 'last.safetensors').write_bytes(b'x' * 1000)\n"
              "    print(path, flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        job_dir = Path(holder.stdout.readline().strip())
        _age(job_dir)
        assert sweep_stale(tmp_path).entries == 0 and job_dir.is_dir()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        swept = sweep_stale(tmp_path)
        assert (swept.entries, swept.bytes) == (1, 1000) and not job_dir.exists()
    finally:
        holder.kill()
        holder.wait()


def _leave_entries(tmp_dir: Path) -> tuple[Path, Path, int]:
    """A dead upload's file (nobody holds it) and a live one's (held here), both old."""
    dead, live = tmp_dir / "upload-dead", tmp_dir / "upload-live"
    dead.write_bytes(b"x" * 1000)
    live.write_bytes(b"y" * 1000)
    held = hold(live)
    _age(dead)
    _age(live)
    return dead, live, held


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_running_api_sweeps_dead_uploads_without_a_restart(settings):
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app(settings.model_copy(update={"temp_sweep_seconds": 0.2}))
    with TestClient(app):
        dead, live, held = _leave_entries(settings.storage_dir / "tmp")  # after start-up's sweep
        try:
            _wait_for(lambda: not dead.exists(), "the running API never swept the dead upload", timeout=10)
            assert live.exists()
        finally:
            os.close(held)
    app.state.services.engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_recovery_sweeps_dead_uploads(settings, monkeypatch):
    import worker.recovery
    from worker.context import worker_context

    dead, live, held = _leave_entries(worker_context(settings).store.tmp_dir)
    monkeypatch.setattr(worker.recovery, "get_settings", lambda: settings)
    monkeypatch.setattr(worker.recovery, "configure_logging", lambda level: None)
    try:
        worker.recovery.main(["--once"])
        assert not dead.exists() and live.exists()
    finally:
        os.close(held)
