"""Job execution benchmarks: dispatch latency and service overhead. Prints a table.

    .venv/bin/python -m bench.bench_jobs [--jobs 15] [--long-steps 150] [--grad-batches 8] [--targets 3]

Runs a real stack on this machine (PostgreSQL database of its own, Redis db 12, API
under uvicorn, `celery worker -c 1`, recovery loop) and measures:

1. POST /v1/jobs -> engine start: from just before the POST to the job's `started`
   event (written by the worker right before it calls the job kind's executor), over
   `--jobs` tiny digits jobs submitted one after another. Median and p90.
2. A job of >= 10 s through the service (POST to finished, as a polling client sees
   it) against the same spec run by `trajx run` (wall time of the command), both on the
   CPU, alternated `--repeats` times (the machine is shared: alternating spreads other
   load over both); medians, with the engine's own seconds from each summary.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import torch
from rich.console import Console
from rich.table import Table

from app.core.persistence.db import make_engine, make_session_factory, session_scope
from app.core.persistence.migrate import upgrade
from app.core.settings import Settings
from app.core.tenancy.admin import create_api_key, create_tenant
from tests.support.digits import digits_spec, write_digits_source
from tests.support.postgres import scratch_database
from tests.support.services import api_server, celery_worker, recovery_loop
from trajx.client import Client

REDIS_URL = "redis://127.0.0.1:6379/12"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _event_times(client: Client, job_id: str) -> dict[str, float]:
    return {e.type: e.created_at.timestamp() for e in reversed(client.events(job_id))}


def dispatch_latencies(client: Client, ids: dict[str, str], jobs: int) -> list[dict[str, float]]:
    """For `jobs` tiny jobs, one at a time: seconds from POST to the job row and to the
    worker's claim (the `started` event, committed right before the executor runs)."""
    latencies = []
    for _ in range(jobs + 1):
        posted = time.time()
        job = client.create_job(digits_spec(ids, steps=1))
        client.wait(job.id, timeout=60, poll_interval=0.05, max_interval=0.1)
        at = _event_times(client, job.id)
        latencies.append({"created": at["created"] - posted, "started": at["started"] - posted})
    return latencies[1:]  # the first job warms the API's and the worker's connections


def service_seconds(client: Client, spec: dict) -> tuple[float, float]:
    """(client-observed POST -> finished, engine seconds from the job summary) for one job."""
    posted = time.monotonic()
    job = client.create_job(spec)
    job = client.wait(job.id, timeout=600, poll_interval=0.1, max_interval=0.2)
    wall = time.monotonic() - posted
    assert job.status == "succeeded", job.error
    return wall, job.summary["seconds"]


def local_seconds(files, steps: int, grad_batches: int, seeds: tuple[int, ...]) -> tuple[float, float]:
    """(wall, engine seconds) of `trajx run` on the same spec with the local files."""
    spec = digits_spec({"theta0": files.theta0.name, "thetaT": files.theta_t.name, "train": files.train.name,
                        "heldout": files.heldout.name}, steps=steps, grad_batches=grad_batches, seeds=seeds)
    spec_file = files.theta0.parent / "spec.json"
    spec_file.write_text(json.dumps(spec))
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        done = subprocess.run([str(Path(sys.executable).with_name("trajx")), "run", str(spec_file),
                               "--out", out, "--json"], capture_output=True, text=True, check=True)
        wall = time.monotonic() - started
    return wall, json.loads(done.stdout)["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=15)
    parser.add_argument("--long-steps", type=int, default=150)
    parser.add_argument("--grad-batches", type=int, default=8)
    parser.add_argument("--targets", type=int, default=3, help="target seeds in the long job")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    redis.Redis.from_url(REDIS_URL).flushdb()
    with scratch_database("trajx_bench") as url, tempfile.TemporaryDirectory(prefix="trajx-bench-") as tmp:
        upgrade(url)
        root = Path(tmp)
        settings = Settings(database_url=url, data_dir=root, storage_dir=root / "artifacts",
                            broker_url=REDIS_URL, dispatcher="celery", auto_migrate=False,
                            create_local_key=False)
        engine = make_engine(url)
        with session_scope(make_session_factory(engine)) as session:
            create_tenant(session, "bench")
            key = create_api_key(session, "bench")
        engine.dispose()
        files = write_digits_source(root / "source")
        with recovery_loop(settings, root, interval=5, grace=30), celery_worker(settings, root), \
                api_server(settings, root) as api, Client(api.url, key) as client:
            ids = files.upload(client)
            latencies = dispatch_latencies(client, ids, args.jobs)
            seeds = tuple(range(1, args.targets + 1))
            long_spec = digits_spec(ids, steps=args.long_steps, grad_batches=args.grad_batches, seeds=seeds)
            runs = []
            for _ in range(args.repeats):
                runs.append((*service_seconds(client, long_spec),
                             *local_seconds(files, args.long_steps, args.grad_batches, seeds)))
        service_wall, service_engine, local, local_engine = (
            statistics.median(column) for column in zip(*runs, strict=True))
    _print(latencies, (service_wall, service_engine), (local, local_engine), args)


def _print(latencies, service: tuple[float, float], local: tuple[float, float], args) -> None:
    table = Table(title="trajx job execution (PostgreSQL + Redis + 1 Celery worker, CPU)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    for stage, label in (("created", "POST -> job row committed"), ("started", "POST -> claimed, engine start")):
        ms = sorted(x[stage] * 1000 for x in latencies)
        goal = "< 250 ms" if stage == "started" else ""
        table.add_row(f"{label}, median (p90) of {len(ms)}",
                      f"{statistics.median(ms):.0f} ({ms[int(0.9 * (len(ms) - 1))]:.0f}) ms", goal)
    job = f"T={args.long_steps}, G={args.grad_batches}, {args.targets} targets, median of {args.repeats}"
    table.add_row(f"`trajx run` ({job}): wall / engine", f"{local[0]:.2f} / {local[1]:.2f} s", ">= 10 s")
    table.add_row(f"service ({job}): POST -> done / engine", f"{service[0]:.2f} / {service[1]:.2f} s", "")
    table.add_row("service vs `trajx run`, wall", f"{(service[0] / local[0] - 1) * 100:+.1f} %", "<= +10 %")
    table.caption = f"torch threads {torch.get_num_threads()}; one machine, loopback"
    Console().print(table)


if __name__ == "__main__":
    main()
