"""Each worker sets torch's threads from the cores it owns, shared by its concurrent jobs
(issue 29: jobs on one machine must not oversubscribe its cores)."""

import os
import threading

import pytest
import torch

from worker import embedded
from worker.threads import threads_per_job, use_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_cores_owned_are_shared_by_the_jobs_run_at_once(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads_per_job(None) == 8
    assert threads_per_job(None, concurrent_jobs=2) == 4
    assert threads_per_job(None, concurrent_jobs=16) == 1  # never zero
    assert threads_per_job(3, concurrent_jobs=2) == 3  # TRAJX_WORKER_THREADS decides


def test_the_embedded_worker_runs_its_jobs_on_the_configured_threads(sqlite_url, tmp_path, restore_threads):
    from app.core.settings import Settings

    settings = Settings(database_url=sqlite_url, data_dir=tmp_path, storage_dir=tmp_path / "artifacts",
                        dispatcher="none", worker_threads=1)
    use_threads(2)
    assert embedded.run_pending(settings, threading.Event()) == 0  # nothing queued
    assert torch.get_num_threads() == 1
