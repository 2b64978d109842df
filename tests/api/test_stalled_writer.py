"""No lock that one stalled process holds for everyone (issue 28, item 2).

A real process is stopped (SIGSTOP, as a hung disk or NFS fsync would stop it) after it
published an upload's blob and before it recorded its row. Deleting and re-uploading the
same bytes through the API must not wait for it; once it resumes, its artifact must
still have its bytes (it republishes them from its own copy).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.files import mlp_checkpoint
from tests.support.http import upload

REPO = Path(__file__).resolve().parents[2]
# Far above what these calls take, far below "forever" (what a held lock meant).
BOUND_SECONDS = 10.0
_STALLED_UPLOAD = """
import os, signal, sys
from pathlib import Path
from app.core.settings import Settings
from app.core.storage import artifacts
from tests.support.jobs import upload_file

record = artifacts._record_upload
def stop_first(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGSTOP)  # the blob is published, the row not yet written
    return record(*args, **kwargs)
artifacts._record_upload = stop_first
print(upload_file(Settings.model_validate_json(sys.argv[1]), sys.argv[2], Path(sys.argv[3])), flush=True)
"""


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("store_backend", ["local", "s3"])
def test_a_stopped_uploader_blocks_nobody_and_keeps_its_bytes(api, tenant, settings, store, tmp_path):
    content = mlp_checkpoint()
    (tmp_path / "w.safetensors").write_bytes(content)
    first = upload(api, tenant, content).json()
    child = subprocess.Popen([sys.executable, "-c", _STALLED_UPLOAD, settings.model_dump_json(), tenant.id,
                              str(tmp_path / "w.safetensors")], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while not _stopped(child.pid):
            assert child.poll() is None and time.monotonic() < deadline, "the uploader never reached its stop"
            time.sleep(0.05)

        started = time.monotonic()
        assert api.delete(f"/v1/artifacts/{first['id']}", headers=tenant.headers).status_code == 204
        again = upload(api, tenant, content)
        assert again.status_code == 201
        assert api.delete(f"/v1/artifacts/{again.json()['id']}", headers=tenant.headers).status_code == 204
        assert time.monotonic() - started < BOUND_SECONDS
        assert not store.exists(first["sha256"])  # no committed row uses it: removed meanwhile

        os.kill(child.pid, signal.SIGCONT)
        stalled_id = child.communicate(timeout=60)[0].strip()
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait()
    content_of_stalled = api.get(f"/v1/artifacts/{stalled_id}/content", headers=tenant.headers)
    assert content_of_stalled.status_code == 200 and content_of_stalled.content == content
