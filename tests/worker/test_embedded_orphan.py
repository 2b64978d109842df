"""`trajx serve` killed with SIGKILL: its embedded worker hands its job back and exits.

Real processes: the server, its worker child, and a second server whose child waits on
the first one's worker lock.
"""

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.digits import digits_spec
from trajx.client import Client
from trajx.demo.server import EmbeddedServer

pytestmark = pytest.mark.slow

GONE_WITHIN_SECONDS = 10
# Long enough (tens of seconds) that a worker which went on with it would still be at it.
LONG = {"steps": 200, "grad_batches": 4}


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").glob("*")
            for child in (task / "children").read_text().split()]


def _worker_of(server: EmbeddedServer) -> int:
    deadline = time.monotonic() + 30
    while not (children := _children(server.pid)):
        assert time.monotonic() < deadline, "the server started no worker"
        time.sleep(0.1)
    return children[0]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its new parent has not reaped it yet


def _wait_gone(pid: int) -> float:
    started = time.monotonic()
    while _alive(pid):
        assert time.monotonic() - started < GONE_WITHIN_SECONDS, f"worker {pid} outlived its server"
        time.sleep(0.1)
    return time.monotonic() - started


def _job_row(data_dir: Path, job_id: str):
    engine = create_engine(f"sqlite:///{data_dir / 'trajx.db'}")
    with engine.connect() as connection:
        row = connection.execute(text("SELECT status, attempts FROM jobs WHERE id = :id"), {"id": job_id}).one()
        events = connection.execute(text("SELECT type FROM job_events WHERE job_id = :id ORDER BY id"),
                                    {"id": job_id}).scalars().all()
    engine.dispose()
    return row, events


def test_a_killed_servers_worker_hands_its_job_back_and_exits(digits, tmp_path):
    data_dir = tmp_path / "server"
    with EmbeddedServer(data_dir) as server, Client(server.url, server.api_key) as client:
        job = client.create_job(digits_spec(digits.upload(client), **LONG))
        deadline = time.monotonic() + 60
        while (client.get_job(job.id).progress.step or 0) < 1:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        worker = _worker_of(server)
        os.kill(server.pid, signal.SIGKILL)
        _wait_gone(worker)
    (status, attempts), events = _job_row(data_dir, job.id)
    assert (status, attempts) == ("queued", 0) and events[-1] == "released"


def test_a_worker_waiting_on_the_lock_exits_when_its_server_is_killed(tmp_path):
    data_dir = tmp_path / "server"
    with EmbeddedServer(data_dir) as first:
        with EmbeddedServer(data_dir) as second:  # its worker waits for the first one's lock
            waiting = _worker_of(second)
            os.kill(second.pid, signal.SIGKILL)
            _wait_gone(waiting)
        assert _alive(_worker_of(first))
