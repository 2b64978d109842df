"""Progress on stderr: a job's while the client waits for it, a file's while it moves."""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from trajx.client.api import Client
from trajx.client.models import Job
from trajx.console.readable import percent, progress_text


class LatestMetrics:
    """`latest(job)`: the newest progress event's data (`target`, `metrics`, ...), reading only
    new events."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self._after: int | None = None
        self._latest: dict[str, Any] | None = None

    def __call__(self, job: Job) -> dict[str, Any] | None:
        if job.status != "queued":
            for event in self.client.events(self.job_id, after=self._after):
                self._after = int(event.id)
                if event.type == "progress" and event.data:
                    self._latest = event.data
        return self._latest


def clock(seconds: float | None) -> str:
    """`1:02:03` / `2:03` (and `-:--` when unknown)."""
    if seconds is None:
        return "-:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def latest_metric(latest: dict[str, Any] | None) -> str:
    """The newest accuracy, labelled with what it belongs to: `t1 acc 87.5%` (a transfer's
    target), `cand acc 87.5%` (an average job's candidate), else nothing."""
    accuracy = ((latest or {}).get("metrics") or {}).get("accuracy")
    if not isinstance(accuracy, int | float):
        return ""
    target = (latest or {}).get("target")
    owner = f"t{target}" if isinstance(target, int) else "cand" if "label" in (latest or {}) else ""
    return f"{owner} acc {percent(accuracy)}".strip()


def bar_fields(job: Job, latest: dict[str, Any] | None, now: datetime | None = None) -> dict[str, Any]:
    """What the job bar shows: `queued` (no step count yet) or `step/total`, the newest
    accuracy and whose, elapsed time since the job started and the time left at its pace."""
    total = job.progress.total if job.progress else None
    step = (job.progress.step if job.progress else None) or 0
    elapsed = None
    if job.started_at is not None:
        elapsed = max(0.0, ((now or datetime.now(UTC)) - job.started_at).total_seconds())
    remaining = elapsed * (total - step) / step if elapsed is not None and total and step else None
    return {"description": job.status, "total": total or None, "completed": step,
            "progress": progress_text(job) or job.status, "accuracy": latest_metric(latest),
            "elapsed": clock(elapsed), "eta": "" if job.done else f"eta {clock(remaining)}"}


def progress_line(job: Job, latest: dict[str, Any] | None) -> str:
    """The same as one plain line, for logs: `job_... running 12/30 40% · t0 acc 90.0% · 0:42 · eta 1:03`."""
    fields = bar_fields(job, latest)
    parts = [fields["progress"], fields["accuracy"], fields["elapsed"] if job.started_at else "", fields["eta"]]
    return f"{job.id} {job.status} " + " · ".join(p for p in parts if p and p != job.status)


class JobWatcher:
    """`on_update(job)` for `Client.wait`: a live bar on a terminal (status, step/total, the
    newest held-out accuracy and its target, elapsed since the job started, ETA; fits 80
    columns), else a line per status change and one every `log_every` seconds while it runs."""

    def __init__(self, console: Console, metrics: Callable[[Job], dict[str, Any] | None] | None = None,
                 log_every: float = 30.0) -> None:
        self.console = console
        self.metrics = metrics
        self.log_every = log_every
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_status: str | None = None
        self._last_line = 0.0

    def __enter__(self) -> Self:
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("{task.description:<10}"), BarColumn(bar_width=16),
                                 TextColumn("{task.fields[progress]}"), TextColumn("{task.fields[accuracy]}"),
                                 TextColumn("{task.fields[elapsed]}"), TextColumn("{task.fields[eta]}"),
                                 console=self.console, transient=True)
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def on_update(self, job: Job) -> None:
        latest = (lambda: self.metrics(job)) if self.metrics else (lambda: None)
        if self._bar is None:
            # Logs (CI): a line per status change, and one now and then while it runs.
            now = time.monotonic()
            if job.status != self._last_status:
                self.console.print(f"{job.id}: {job.status}")
                self._last_line = now
            elif job.status == "running" and now - self._last_line >= self.log_every:
                self.console.print(progress_line(job, latest()))
                self._last_line = now
        else:
            fields = bar_fields(job, latest())
            if self._task is None:
                self._task = self._bar.add_task(**fields)
            else:
                self._bar.update(self._task, **fields)
        self._last_status = job.status


class TransferBars:
    """The client's `progress` callback: a byte bar per file on a terminal, nothing otherwise.

    A bar is live only while its file moves, so it never overlaps the JobWatcher's
    (rich allows one live display at a time).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._description: str | None = None

    def __call__(self, description: str, done: int, total: int) -> None:
        if not self.console.is_terminal:
            return
        if self._bar is None or description != self._description:
            self.close()
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                                 transient=True)
            self._bar.start()
            self._task, self._description = self._bar.add_task(description, total=total), description
        self._bar.update(self._task, completed=done, total=total)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = self._description = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
