"""`trajx demo`: the whole service on the embedded default, end to end, in about a minute.

Start `trajx serve` on a free port with its own data directory; train a source
`mlp` on digits; upload θ⁰, θᵀ and the data shards through the client; submit one
Naive and one FGMT job, each transferring onto the same new seeds; wait; download
the transferred checkpoints; evaluate them on the held-out split and print one
table; stop the server.
"""

import signal
import statistics
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from trajx.client import Client, Job
from trajx.client.config import LOCAL_KEY_FILENAME
from trajx.console.watch import JobWatcher, LatestMetrics
from trajx.demo.server import EmbeddedServer
from trajx.demo.source import (
    ARCH,
    MLP_CONFIG,
    DigitsSplit,
    accuracy,
    load_digits_split,
    train_source,
)
from trajx.engine.zoo import init_state_dict
from trajx.io import load_tensors, save_tensors

# The demo's models are tiny: extra intra-op threads only contend for a small machine's cores.
_SMALL_MODEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Row:
    """One line of the demo table: accuracies over the target seeds and a time."""

    model: str
    accuracies: list[float]
    seconds: float | None

    def mean(self) -> float:
        return statistics.fmean(self.accuracies)


@contextmanager
def _data_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="trajx-demo-") as tmp:
        yield Path(tmp)


def run_demo(seeds: tuple[int, ...] = (1, 2, 3), steps: int = 30, data_dir: Path | None = None,
             console: Console | None = None, *, keep_serving: bool = False, port: int | None = None) -> list[Row]:
    """Run the demo, print its table and the dashboard URL of its jobs on `console`; return
    the table's rows. With `keep_serving`, the server stays up until Ctrl-C.

    Raises RuntimeError if the server does not start or a job does not succeed.
    """
    console = console or Console()
    log = Console(stderr=True)
    torch.set_num_threads(1)  # as _SMALL_MODEL_ENV does for the server (training here: 20x faster)
    with _data_dir(data_dir) as root:
        split = load_digits_split()
        files = _write_source(root / "source", split)
        log.print(f"source mlp {MLP_CONFIG['hidden']} trained in {files['train_seconds']:.1f} s")
        with EmbeddedServer(root / "server", port, env=_SMALL_MODEL_ENV) as server, \
                Client(server.url, server.api_key) as client:
            log.print(f"trajx serve on {server.url} (data in {server.data_dir})")
            ids = {name: client.upload(path).id for name, path in files["paths"].items()}
            jobs = {method: client.create_job(_spec(method, ids, seeds, steps)) for method in ("naive", "fgmt")}
            finished = {method: _wait(client, job, log) for method, job in jobs.items()}
            results = {method: _download_lasts(client, job, root / "results" / method)
                       for method, job in finished.items()}
            rows = _rows(files, split, seeds, finished, results)
            console.print(_table(rows, seeds, steps))
            console.print(_dashboard_note(server, finished, keep_serving), soft_wrap=True)  # whole URLs
            if keep_serving:
                _serve_until_interrupted(log)
    return rows


def _rows(files: dict, split: DigitsSplit, seeds: tuple[int, ...], finished: dict[str, Job],
          results: dict[str, list[dict]]) -> list[Row]:
    return [
        Row("target init (untrained)", [accuracy(init_state_dict(ARCH, MLP_CONFIG, s), split) for s in seeds], None),
        *(Row(f"{method.upper() if method == 'fgmt' else 'Naive'} transfer",
              [accuracy(state, split) for state in results[method]], _job_seconds(finished[method]))
          for method in ("naive", "fgmt")),
        Row("trained source", [files["source_accuracy"]], files["train_seconds"]),
    ]


def _dashboard_note(server: EmbeddedServer, jobs: dict[str, Job], keep_serving: bool) -> str:
    """Where to see the jobs' curves: one dashboard URL per job, and where the sign-in key is."""
    lines = [f"dashboard: {server.url}/#/jobs/{job.id}  ({method})" for method, job in jobs.items()]
    lines.append(f"sign in with the API key in {server.data_dir / LOCAL_KEY_FILENAME}")
    if not keep_serving:
        lines.append("the demo server stops now: run `bash .ci/demo --keep-serving` to keep it up")
    return "\n".join(lines)


def _serve_until_interrupted(log: Console) -> None:
    """Block until SIGINT or SIGTERM: either way the caller's `with` blocks stop the server
    (a plain SIGTERM would end this process and leave the server, in its own session, running)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.print("the demo server stays up; press Ctrl-C to stop it")
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.print("stopping the demo server")


def _write_source(out_dir: Path, split: DigitsSplit) -> dict:
    theta0, theta_t, seconds = train_source(split)
    save_tensors(out_dir / "theta0.safetensors", theta0)
    save_tensors(out_dir / "thetaT.safetensors", theta_t)
    train, held_out = split.save_shards(out_dir)
    return {
        "paths": {"theta0": out_dir / "theta0.safetensors", "thetaT": out_dir / "thetaT.safetensors",
                  "train": train, "heldout": held_out},
        "train_seconds": seconds,
        "source_accuracy": accuracy(theta_t, split),
    }


def _spec(method: str, ids: dict[str, str], seeds: tuple[int, ...], steps: int) -> dict:
    return {
        "kind": "transfer",
        "method": method,
        "arch": {"name": ARCH, "config": MLP_CONFIG},
        "source": [ids["theta0"], ids["thetaT"]],
        "targets": [{"seed": seed} for seed in seeds],
        "train_data": ids["train"],
        "eval_data": ids["heldout"],
        "params": {"steps": steps, "batch_size": 128, "seed": 0, "device": "cpu"},
        "outputs": {"permutations": False},
    }


def _wait(client: Client, job: Job, log: Console) -> Job:
    with JobWatcher(log, LatestMetrics(client, job.id)) as watcher:
        job = client.wait(job.id, timeout=600, on_update=watcher.on_update)
    if job.status != "succeeded":
        error = f"{job.error.code}: {job.error.message}" if job.error else "no error recorded"
        raise RuntimeError(f"demo job {job.id} ({job.spec.get('method')}) {job.status}: {error}")
    return job


def _download_lasts(client: Client, job: Job, out_dir: Path) -> list[dict]:
    """Download each target's last checkpoint; return the state dicts in target order."""
    lasts = sorted((f for f in job.files if f.role == "last"), key=lambda f: f.target)
    return [load_tensors(client.download_result(f, out_dir), f"{job.id} target {f.target}") for f in lasts]


def _job_seconds(job: Job) -> float | None:
    seconds = (job.summary or {}).get("seconds")
    if seconds is None and job.started_at and job.finished_at:
        seconds = (job.finished_at - job.started_at).total_seconds()
    return seconds


def _table(rows: list[Row], seeds: tuple[int, ...], steps: int) -> Table:
    table = Table(title=f"digits held-out accuracy · targets: seeds {', '.join(map(str, seeds))} · T = {steps}")
    table.add_column("model")
    table.add_column("accuracy (mean)", justify="right")
    table.add_column("min … max", justify="right")
    table.add_column("seconds", justify="right")
    for row in rows:
        spread = f"{min(row.accuracies):.1%} … {max(row.accuracies):.1%}" if len(row.accuracies) > 1 else ""
        seconds = "" if row.seconds is None else f"{row.seconds:.1f}"
        table.add_row(row.model, f"{row.mean():.1%}", spread, seconds)
    table.caption = "seconds: one job for all targets (server side), or source training"
    return table
