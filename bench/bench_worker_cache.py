"""Benchmark a job's time to first step through each artifact store: the local store
(read in place), and S3 (SeaweedFS) with a cold and then a warm worker cache.

    .venv/bin/python -m bench.bench_worker_cache [--in-features 32768] [--hidden 256] [--repeats 2]

Inputs: two MLP checkpoints of `in_features x hidden` weights (34 MB each at the
defaults, so their download shows, with little compute) and a data shard, uploaded through the very
functions the API uses. Each job runs in this process through `worker.runner.run_job`
(the function the Celery task runs); time to first step is the first `progress` event
minus the `started` event (the claim), from the job's own events. The S3 rows need the SeaweedFS of
`.ci/services` (127.0.0.1:18333); each run uses a bucket of its own. One job runs first
and is not counted (imports, compilation); each row is the best of `repeats` jobs, a
cold one after emptying the cache.
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from sqlalchemy import select

from app.core.persistence.migrate import upgrade
from app.core.persistence.models import JobEvent
from app.core.settings import Settings
from bench.bench_api import table
from tests.support import seaweedfs
from tests.support.jobs import submit_job, upload_files
from trajx.engine.zoo import init_state_dict
from worker.context import worker_context
from worker.runner import run_job


def write_inputs(workdir: Path, in_features: int, hidden: int) -> tuple[dict, dict[str, Path]]:
    arch = {"name": "mlp", "config": {"in_features": in_features, "hidden": [hidden], "num_classes": 10}}
    paths = {}
    for name, seed in (("theta0", 0), ("thetaT", 1)):
        paths[name] = workdir / f"{name}.safetensors"
        save_file(init_state_dict("mlp", arch["config"], seed), str(paths[name]))
    generator = torch.Generator().manual_seed(0)
    paths["train"] = workdir / "train.safetensors"
    save_file({"inputs": torch.randn(256, in_features, generator=generator),
               "targets": torch.randint(0, 10, (256,), generator=generator)}, str(paths["train"]))
    return arch, paths


def time_to_first_step(settings: Settings, job_id: str) -> float:
    assert run_job(job_id, settings) == "succeeded"
    with worker_context(settings).sessions() as session:
        events = session.execute(select(JobEvent.type, JobEvent.created_at).where(JobEvent.job_id == job_id)
                                 .order_by(JobEvent.id)).all()
    started = next(at for kind, at in events if kind == "started")
    first_step = next(at for kind, at in events if kind == "progress")
    return (first_step - started).total_seconds()


def settings_for(store: str, workdir: Path) -> Settings:
    base = {"database_url": f"sqlite:///{workdir / 'bench.db'}", "data_dir": workdir,
            "storage_dir": workdir / "artifacts", "dispatcher": "none", "create_local_key": False}
    if store == "s3":
        for name, value in seaweedfs.CREDENTIALS.items():
            os.environ.setdefault(name, value)
        base.update(storage_backend="s3", s3_endpoint_url=seaweedfs.SHARED_ENDPOINT, s3_region="us-east-1",
                    s3_bucket=seaweedfs.new_bucket(seaweedfs.SHARED_ENDPOINT), cache_dir=workdir / "cache")
    settings = Settings(**base)
    upgrade(settings.database_url)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--in-features", type=int, default=32768)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not seaweedfs.answers(seaweedfs.SHARED_ENDPOINT):
        raise SystemExit(f"SeaweedFS is not answering at {seaweedfs.SHARED_ENDPOINT} (bash .ci/services)")
    from tests.conftest import make_tenant

    rows = []
    with tempfile.TemporaryDirectory(prefix="trajx-bench-") as tmp:
        arch, paths = write_inputs(Path(tmp), args.in_features, args.hidden)
        megabytes = sum(p.stat().st_size for p in paths.values()) / 1e6
        for store in ("local", "s3"):
            workdir = Path(tmp) / store
            workdir.mkdir()
            settings = settings_for(store, workdir)
            tenant_id = make_tenant(worker_context(settings).sessions).id
            ids = upload_files(settings, tenant_id, paths)
            spec = {"kind": "transfer", "method": "fgmt", "arch": arch, "source": [ids["theta0"], ids["thetaT"]],
                    "targets": [{"seed": 7}], "train_data": ids["train"], "params": {"steps": 2}}
            if store == "local":
                time_to_first_step(settings, submit_job(settings, tenant_id, spec))  # warm-up, not counted
            runs = ("read in place",) if store == "local" else ("cold cache", "warm cache")
            for run in runs:
                measured = []
                for _ in range(args.repeats):
                    if run == "cold cache":
                        shutil.rmtree(settings.cache_dir / "blobs", ignore_errors=True)
                        (settings.cache_dir / "blobs").mkdir()
                    started = time.perf_counter()
                    first = time_to_first_step(settings, submit_job(settings, tenant_id, spec))
                    measured.append((first, time.perf_counter() - started))
                first, whole = min(measured)
                rows.append((store, run, f"{first:.2f} s", f"{whole:.2f} s"))
            if store == "s3":
                seaweedfs.drop_bucket(seaweedfs.SHARED_ENDPOINT, settings.s3_bucket)
    table(f"Time to first step, FGMT 2 steps, MLP {args.in_features}x{args.hidden}, inputs {megabytes:.0f} MB",
          ("store", "worker cache", "to first step", "whole job"), rows)
    print(f"\n{os.cpu_count()} CPUs; 1-min load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
