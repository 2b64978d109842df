"""Fault harness: jobs through real faults on the production layout, one table row per scenario.

    .venv/bin/python -m bench.faults [--jobs 4] [--steps 12] [--scenarios kill,outage,redis,api]

One stack for all scenarios (tests.support.services): a PostgreSQL database of its own,
Redis (database 10, flushed), two Celery workers (`-c 1` each), the recovery loop and the
API. Each scenario submits `--jobs` identical seeded transfers (digits MLP, CPU), injects
its fault once some job has completed a few steps, and waits for every job to end; a thread
polls job status and the job list throughout. Columns:

- lost: jobs the API no longer knows; stranded: jobs not finished 180 s after the fault;
- run twice: jobs with more than one final event;
- corrupted: finished jobs whose result checkpoints differ from the first clean job's
  (all jobs share one seeded spec), or fail their sha256 on download;
- 5xx: server errors the polling clients saw, but for 503 (`database_unavailable`, with
  Retry-After: the API's answer while the database is down), counted apart as `503`;
  refused connections while the API restarts are counted as `refused`;
- temp bytes: bytes left under the store's tmp/ once every job ended;
- resumed: `resumed` events (the fault really interrupted a job); steps redone: per-step
  results reported beyond each job's own steps (an interrupted attempt's steps that the
  next attempt computed again).

Faults: `kill` SIGKILLs the process running a job; `outage` makes PostgreSQL refuse
connections for 15 s; `redis` restarts Redis without saving; `api` restarts the API.
"""

import argparse
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis
from sqlalchemy import text

from app.core.persistence.db import make_engine, make_session_factory
from app.core.settings import Settings
from bench.tables import table
from tests.conftest import make_tenant
from tests.support.db_faults import database_down, scratch_postgres
from tests.support.digits import digits_spec, write_digits_source
from tests.support.services import api_server, celery_worker, recovery_loop, redis_restarted
from trajx.client import Client, Job
from trajx.client.errors import ApiError, ClientError, WaitTimeout

REDIS_URL = "redis://127.0.0.1:6379/10"
FINISH_BOUND_SECONDS = 180
TERMINAL = ("succeeded", "failed", "cancelled")


class Poller:
    """Clients polling one job's status and the job list while a scenario runs."""

    def __init__(self, base_url: Callable[[], str], key: str) -> None:
        self.base_url, self.key = base_url, key
        self.job_id: str | None = None
        self.server_errors = self.unavailable = self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        while not self._stop.wait(0.05):
            paths = ["/v1/jobs?limit=50"] + ([f"/v1/jobs/{self.job_id}"] if self.job_id else [])
            for path in paths:
                try:
                    status = httpx.get(self.base_url() + path, headers=headers, timeout=10).status_code
                    self.unavailable += status == 503
                    self.server_errors += status >= 500 and status != 503
                except httpx.TransportError:
                    self.refused += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _checkpoints(job: Job) -> dict[tuple[int | None, str], str]:
    return {(f.target, f.role): f.sha256 for f in job.files if f.path.endswith(".safetensors")}


def _worker_pid(database_url: str, job_id: str) -> int | None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        holder = connection.execute(text("SELECT worker_id FROM jobs WHERE id = :id AND status = 'running'"),
                                    {"id": job_id}).scalar()
    engine.dispose()
    return int(holder.rsplit(":", 1)[1]) if holder else None


def run_scenario(name: str, inject: Callable[[list[Job]], None], client: Client, poller: Poller, spec: dict,
                 jobs: int, reference: dict, tmp_dir: Path) -> tuple[str, ...]:
    created = [client.create_job(spec) for _ in range(jobs)]
    poller.job_id = created[0].id
    deadline = time.monotonic() + 120
    while max((client.get_job(j.id).progress.step or 0) for j in created) < 3:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no job got going")
        time.sleep(0.1)
    inject(created)
    deadline = time.monotonic() + FINISH_BOUND_SECONDS
    lost = stranded = twice = corrupted = redone = resumed = 0
    for job in created:
        try:
            done = client.wait(job.id, timeout=max(1.0, deadline - time.monotonic()), poll_interval=0.2)
        except WaitTimeout:
            stranded += 1
            continue
        except ApiError as exc:
            if exc.status != 404:
                raise
            lost += 1
            continue
        events = client.events(job.id)
        twice += sum(e.type in TERMINAL for e in events) > 1
        resumed += sum(e.type == "resumed" for e in events)
        per_step = sum(len((e.data or {}).get("steps") or []) for e in events if e.type == "progress")
        redone += max(0, per_step - (done.progress.total or 0))
        if done.status == "succeeded":
            try:
                for file in done.files:
                    if file.path.endswith(".safetensors"):
                        client.download_result(file, tmp_dir / job.id)
            except ClientError:  # the download's sha256 or size did not match the manifest
                corrupted += 1
                continue
            corrupted += _checkpoints(done) != reference
    return name, str(jobs), str(lost), str(twice), str(stranded), str(corrupted), str(poller.server_errors), \
        str(poller.unavailable), str(poller.refused), "-", str(resumed), str(redone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--scenarios", default="kill,outage,redis,api")
    args = parser.parse_args()
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory(prefix="trajx-faults-") as tmp, scratch_postgres() as url:
        root = Path(tmp)
        settings = Settings(database_url=url, data_dir=root, storage_dir=root / "artifacts", broker_url=REDIS_URL,
                            dispatcher="celery", heartbeat_seconds=0.5, stale_seconds=5, auto_migrate=False,
                            create_local_key=False)
        engine = make_engine(url)
        key = make_tenant(make_session_factory(engine)).key
        engine.dispose()
        digits = write_digits_source(root / "source")
        api = api_server(settings, root)
        with recovery_loop(settings, root), celery_worker(settings, root, "a"), celery_worker(settings, root, "b"), \
                api:
            client = Client(api.url, key, timeout=30)
            spec = digits_spec(digits.upload(client), steps=args.steps, grad_batches=4)
            reference = _checkpoints(client.wait(client.create_job(spec).id, timeout=300))

            def kill(jobs: list[Job]) -> None:
                # The process of the job furthest along: the one with steps to lose.
                furthest = max(jobs, key=lambda j: client.get_job(j.id).progress.step or 0)
                pid = _worker_pid(url, furthest.id)
                if pid:
                    os.kill(pid, signal.SIGKILL)

            def outage(jobs: list[Job]) -> None:
                with database_down(url):
                    time.sleep(15)

            def restart_redis(jobs: list[Job]) -> None:
                with redis_restarted():
                    pass

            def restart_api(jobs: list[Job]) -> None:
                api.stop()
                api.start()

            faults = {"kill": ("worker SIGKILL", kill), "outage": ("PostgreSQL down 15 s", outage),
                      "redis": ("Redis restart", restart_redis), "api": ("API restart", restart_api)}
            rows = []
            for scenario in args.scenarios.split(","):
                poller = Poller(lambda: api.url, key)
                label, inject = faults[scenario]
                row = run_scenario(label, inject, client, poller, spec, args.jobs, reference, root / "downloads")
                poller.stop()
                temp_bytes = sum(p.stat().st_size for p in (root / "artifacts" / "tmp").rglob("*") if p.is_file())
                rows.append((*row[:9], str(temp_bytes), *row[10:]))
            client.close()
    header = ("scenario", "jobs", "lost", "run twice", "stranded", "corrupted", "5xx", "503", "refused",
              "temp bytes", "resumed", "steps redone")
    table("Fault scenarios: jobs lost, run twice, stranded, corrupted; client errors; leftovers", header, rows)
    print(f"\n{args.steps} steps per job; {os.cpu_count()} CPUs; 1-min load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
