"""Benchmark the API process: 1 GB upload/download throughput with its memory growth
through each artifact store (local disk, S3), job-status polling latency at a fixed
request rate, and a mixed load of 200 clients (every fifth request a 50-job list) with
p50/p99 per endpoint, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.bench_api [--size-mb 1024] [--rate 200] [--duration 20] [--stores local,s3] [--clients 200]

The API runs as a real `uvicorn app.main:app` process on loopback; transfers use curl
(streamed both ways), polling uses wrk (Debian: `apt-get install -y wrk`) with a Lua
script that paces each connection to the target rate. RSS comes from /proc: growth is
the process's peak (VmHWM) during the transfers minus its RSS before them. PostgreSQL
rows need the server at 127.0.0.1:5432 (a scratch database is created and dropped); S3
rows the SeaweedFS of `.ci/services` at 127.0.0.1:18333 (a scratch bucket likewise), on
this same machine, so its own CPU and disk work share the machine with the API's.
"""

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.core.persistence.db import make_engine, make_session_factory, session_scope
from app.core.persistence.migrate import upgrade
from app.core.tenancy.admin import create_tenant
from app.core.tenancy.auth import issue_key
from bench.tables import table
from tests.support.files import data_shard, mlp_checkpoint
from tests.support.http import MLP_CONFIG
from tests.support.postgres import scratch_database
from trajx.demo.server import free_port

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def database(backend: str, workdir: Path):
    """Yield the URL of a fresh migrated database of `backend`."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
        upgrade(url)
        yield url
        return
    with scratch_database("trajx_bench") as url:
        upgrade(url)
        yield url


def new_key(database_url: str) -> str:
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as session:
        _, key = issue_key(session, create_tenant(session, "bench"), "bench")
    engine.dispose()
    return key


@contextmanager
def store_env(store: str, workdir: Path):
    """The TRAJX_* variables of artifact store `store` ("local" or "s3": a scratch bucket)."""
    if store == "local":
        yield {}
        return
    from tests.support import seaweedfs

    if not seaweedfs.answers(seaweedfs.SHARED_ENDPOINT):
        sys.exit(f"SeaweedFS is not answering at {seaweedfs.SHARED_ENDPOINT} (bash .ci/services)")
    bucket = seaweedfs.new_bucket(seaweedfs.SHARED_ENDPOINT)
    try:
        yield {**seaweedfs.CREDENTIALS, "TRAJX_STORAGE_BACKEND": "s3", "TRAJX_S3_BUCKET": bucket,
               "TRAJX_S3_ENDPOINT_URL": seaweedfs.SHARED_ENDPOINT, "TRAJX_S3_REGION": "us-east-1",
               "TRAJX_CACHE_DIR": str(workdir / "cache")}
    finally:
        seaweedfs.drop_bucket(seaweedfs.SHARED_ENDPOINT, bucket)


@contextmanager
def api_server(database_url: str, workdir: Path, extra_env: dict[str, str] | None = None):
    """Run `uvicorn app.main:app` for `database_url`; yield (base_url, pid)."""
    port = free_port()
    env = {**os.environ, "TRAJX_DATABASE_URL": database_url, "TRAJX_STORAGE_DIR": str(workdir / "artifacts"),
           "TRAJX_DATA_DIR": str(workdir), "TRAJX_DISPATCHER": "none", "TRAJX_CREATE_LOCAL_KEY": "false",
           "TRAJX_MAX_UPLOAD_BYTES": str(4 * 1024**3), **(extra_env or {})}
    with open(workdir / "api.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                                    "--port", str(port), "--no-access-log", "--log-level", "warning"],
                                   env=env, stdout=log, stderr=log, cwd=REPO)
        base_url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"API did not start; see {workdir / 'api.log'}")
            yield base_url, process.pid
        finally:
            process.terminate()
            process.wait(10)


def rss_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def reset_peak_rss(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def big_safetensors(path: Path, size_mb: int) -> None:
    """One F32 tensor of `size_mb` MiB, so the upload takes the header-validation path."""
    nbytes = size_mb * 1024**2
    header = f'{{"big":{{"dtype":"F32","shape":[{nbytes // 4}],"data_offsets":[0,{nbytes}]}}}}'.encode()
    header += b" " * (-len(header) % 8)
    block = os.urandom(1024**2)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.writelines(block for _ in range(size_mb))


def curl(*args: str) -> dict[str, float]:
    out = subprocess.run(["curl", "-sS", "--fail-with-body", "-o", "/dev/null", "-w",
                          "%{time_total} %{speed_upload} %{speed_download} %{http_code}", *args],
                         capture_output=True, text=True, check=True).stdout.split()
    return {"seconds": float(out[0]), "up": float(out[1]), "down": float(out[2]), "status": float(out[3])}


def bench_transfer(base_url: str, pid: int, key: str, workdir: Path, size_mb: int) -> list[tuple[str, str]]:
    source = workdir / "big.safetensors"
    big_safetensors(source, size_mb)
    auth = f"Authorization: Bearer {key}"
    httpx.get(f"{base_url}/v1/artifacts", headers={"Authorization": f"Bearer {key}"})  # warm up
    baseline = rss_kib(pid, "VmRSS")
    reset_peak_rss(pid)
    up = curl("-X", "POST", "-T", str(source), "-H", auth, "-H", "Content-Type: application/octet-stream",
              f"{base_url}/v1/artifacts?name=big.safetensors")
    up_peak = rss_kib(pid, "VmHWM")
    artifact_id = httpx.get(f"{base_url}/v1/artifacts", params={"limit": 1},
                            headers={"Authorization": f"Bearer {key}"}).json()["data"][0]["id"]
    reset_peak_rss(pid)
    down = curl("-H", auth, f"{base_url}/v1/artifacts/{artifact_id}/content")
    down_peak = rss_kib(pid, "VmHWM")
    size = source.stat().st_size
    source.unlink()
    mb = 1e6
    return [
        ("upload", f"{size / mb / up['seconds']:.0f} MB/s ({size / mb:.0f} MB in {up['seconds']:.2f} s)",
         f"{(up_peak - baseline) / 1024:.1f} MiB"),
        ("download", f"{size / mb / down['seconds']:.0f} MB/s ({size / mb:.0f} MB in {down['seconds']:.2f} s)",
         f"{(down_peak - baseline) / 1024:.1f} MiB"),
    ]


def seed_job(base_url: str, key: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}

    def put(content: bytes, name: str) -> str:
        return httpx.post(f"{base_url}/v1/artifacts", params={"name": name}, content=content,
                          headers=headers).json()["id"]

    spec = {"arch": {"name": "mlp", "config": MLP_CONFIG},
            "source": [put(mlp_checkpoint(fill=i), f"s{i}.safetensors") for i in (0, 1)],
            "targets": [{"seed": 1}], "train_data": put(data_shard(), "train.safetensors")}
    response = httpx.post(f"{base_url}/v1/jobs", json={"spec": spec}, headers=headers)
    response.raise_for_status()
    return response.json()["id"]


WRK_SCRIPT = """
wrk.headers["Authorization"] = "Bearer {key}"
function delay() return {delay_ms} end
"""


# The mixed load's clients wait a random time (uniform on [0, 2·mean], first request
# included) between requests: many clients polling independently, not in lockstep. With a
# fixed wait every connection fires in the same instant once a period, and p99 measures how
# long the API takes to drain a burst of 200 simultaneous requests.
MIXED_SCRIPT = """
wrk.headers["Authorization"] = "Bearer {key}"
function delay() return math.random(0, {twice_ms}) end
"""


def run_wrk(url: str, key: str, script: Path, connections: int, delay_ms: int, seconds: int) -> str:
    script.write_text(WRK_SCRIPT.format(key=key, delay_ms=delay_ms))
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"polling got errors:\n{out}")
    return out


def requests_per_second(wrk_output: str) -> float:
    return float(re.search(r"Requests/sec:\s+([\d.]+)", wrk_output).group(1))


def bench_polling(base_url: str, key: str, workdir: Path, rate: int, duration: int) -> tuple[str, str, str]:
    """GET one job at about `rate` req/s for `duration` s; returns (achieved rate, p50, p99).

    wrk waits `delay()` ms after each response before the next request on that
    connection, so a short calibration run measures the answer time to subtract.
    """
    url = f"{base_url}/v1/jobs/{seed_job(base_url, key)}"
    connections = 8
    cycle_ms = connections * 1000 / rate
    script = workdir / "poll.lua"
    calibration = requests_per_second(run_wrk(url, key, script, connections, int(cycle_ms), 3))
    answer_ms = connections * 1000 / calibration - int(cycle_ms)
    out = run_wrk(url, key, script, connections, max(round(cycle_ms - answer_ms), 0), duration)
    return f"{requests_per_second(out):.0f}", *percentiles(out)


def percentiles(wrk_output: str) -> tuple[str, str]:
    return tuple(re.search(rf"^\s+{p}%\s+(\S+)", wrk_output, re.MULTILINE).group(1) for p in (50, 99))


def bench_mixed(base_url: str, key: str, workdir: Path, clients: int, rate: int,
                duration: int) -> list[tuple[str, ...]]:
    """`clients` connections at about `rate` req/s in all (random waits: MIXED_SCRIPT), four in five poll one job's
    status, one in five lists 50 jobs (of 60 stored). Two wrk processes run side by side,
    one per endpoint, so each reports its own latency. Returns a row per endpoint."""
    headers = {"Authorization": f"Bearer {key}"}
    job_id = seed_job(base_url, key)
    spec = httpx.get(f"{base_url}/v1/jobs/{job_id}", headers=headers).json()["spec"]
    for _ in range(59):
        httpx.post(f"{base_url}/v1/jobs", json={"spec": spec}, headers=headers).raise_for_status()
    lists = max(1, clients // 5)
    loads = {"GET /v1/jobs/{id}": (f"{base_url}/v1/jobs/{job_id}", clients - lists),
             "GET /v1/jobs?limit=50": (f"{base_url}/v1/jobs?limit=50", lists)}
    runs = {}
    for name, (url, connections) in loads.items():
        share = rate * connections / clients
        script = workdir / f"mixed-{connections}.lua"
        script.write_text(MIXED_SCRIPT.format(key=key, twice_ms=round(2 * connections * 1000 / share)))
        runs[name] = subprocess.Popen(["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s",
                                       "--timeout", "10s", "--latency", "-s", str(script), url],
                                      stdout=subprocess.PIPE, text=True)
    rows = []
    for name, process in runs.items():
        out, _ = process.communicate()
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        rows.append((name, str(loads[name][1]), f"{requests_per_second(out):.0f}", *percentiles(out),
                     errors.group(1) if errors else "0"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--stores", default="local,s3", help="artifact stores for the transfer rows")
    parser.add_argument("--clients", type=int, default=200, help="connections of the mixed load")
    parser.add_argument("--only-mixed", action="store_true", help="skip the transfer and polling tables")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")

    load_before = os.getloadavg()[0]
    transfer_rows, poll_rows, mixed_rows = [], [], []
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="trajx-bench-") as tmp, database(backend, Path(tmp)) as url:
            workdir = Path(tmp)
            key = new_key(url)
            if not transfer_rows and not args.only_mixed:  # the store does not depend on the database: measure once
                for store in args.stores.split(","):
                    with store_env(store, workdir) as env, api_server(url, workdir, env) as (base_url, pid):
                        transfer_rows += [(store, *row) for row in
                                          bench_transfer(base_url, pid, key, workdir, args.size_mb)]
            with api_server(url, workdir) as (base_url, pid):
                if not args.only_mixed:
                    achieved, p50, p99 = bench_polling(base_url, key, workdir, args.rate, args.duration)
                    poll_rows.append((backend, f"{args.rate}", achieved, p50, p99))
                mixed_rows += [(backend, *row) for row in
                               bench_mixed(base_url, key, workdir, args.clients, args.rate, args.duration)]
    if not args.only_mixed:
        table(f"Artifact transfer, {args.size_mb} MiB, one API process, curl on loopback",
              ("store", "direction", "throughput", "API peak RSS growth"), transfer_rows)
        table(f"GET /v1/jobs/{{id}} polling, wrk, 8 paced connections, {args.duration} s, one API process",
              ("database", "target req/s", "achieved req/s", "p50", "p99"), poll_rows)
    table(f"Mixed load: {args.clients} connections with random waits, about {args.rate} req/s in all, every fifth a "
          f"50-job list, {args.duration} s, one API process",
          ("database", "endpoint", "connections", "req/s", "p50", "p99", "non-2xx"), mixed_rows)
    # The machine is shared: say how busy it was, since tail latency depends on it.
    print(f"\n{os.cpu_count()} CPUs; Python {sys.version.split()[0]}; 1-min load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
