"""Human renderings of jobs and events: the stacked jobs table, one-line events, sparklines.

Pure functions of the API's documents, so they are tested without a server. Ids are
never cut (they are copied into other commands); everything else fits 80 columns.
"""

from datetime import datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from trajx.client.models import Event, Job

SPARK = "▁▂▃▄▅▆▇█"


def percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "—"


def best_accuracy(job: Job) -> float | None:
    """The best held-out accuracy over the job's targets (None before it succeeds or without eval data)."""
    summary = job.summary or {}
    values = [t.get("best_accuracy") for t in summary.get("targets") or [] if isinstance(t, dict)]
    values.append(summary.get("best_accuracy"))  # an average job's chosen candidate
    numbers = [v for v in values if isinstance(v, int | float)]
    return max(numbers) if numbers else None


def progress_text(job: Job) -> str:
    """`queued`, `5/30 17%`, or nothing once there is no step count."""
    if job.status == "queued":
        return "queued"
    step, total = (job.progress.step or 0, job.progress.total or 0) if job.progress else (0, 0)
    return f"{step}/{total} {100 * step // total}%" if total else ""


def duration(job: Job) -> str:
    if job.started_at is None:
        return ""
    end = job.finished_at or datetime.now(job.started_at.tzinfo)
    seconds = max(0.0, (end - job.started_at).total_seconds())
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


def what(job: Job) -> str:
    """`kind · method · architecture`, from the spec whatever the kind (missing parts left out)."""
    arch = job.spec.get("arch") if isinstance(job.spec.get("arch"), dict) else {}
    label = arch.get("name") or ("program" if arch.get("program") else None)
    method = job.spec.get("method")
    if isinstance(method, dict):  # an average job's method is an object with its own name
        method = method.get("name")
    return " · ".join(str(p) for p in (job.kind, method, label) if p)


def jobs_table(jobs: list[Job]) -> Table:
    """Two lines per job: id / kind · method · arch, status / progress or error code, best
    held-out accuracy, created / duration. Fits 80 columns with ids whole (long error codes fold)."""
    table = Table(box=box.SIMPLE, pad_edge=False, collapse_padding=True)
    table.add_column("job", no_wrap=True)
    table.add_column("status", overflow="fold")
    table.add_column("best", justify="right", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for job in jobs:
        detail = job.error.code if job.error else "" if job.status == "queued" else progress_text(job)
        created = f"{job.created_at.astimezone():%m-%d %H:%M}" if job.created_at else ""
        about = " · ".join(part for part in (job.name, what(job)) if part)
        table.add_row(Text(job.id) + Text(f"\n{about}", style="dim"),
                      Text(job.status, style=_STATUS_STYLE.get(job.status, "")) + Text(f"\n{detail}", style="dim"),
                      percent(best_accuracy(job)) if best_accuracy(job) is not None else "—",
                      Text(created) + Text(f"\n{duration(job)}", style="dim"))
    return table


_STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "cancelling": "yellow",
                 "running": "blue"}


def describe_event(event: Event) -> str:
    """One line for an event: progress with its metrics, a failure with its code, else key=value."""
    data = event.data or {}
    if event.type == "progress":
        metrics = data.get("metrics") or {}
        of = f"({data.get('step')}/{data.get('total')})"
        if "label" in data:  # an average job's candidate
            parts = [f"candidate {data['label']} {of}"]
        elif "path" in data:  # an align job's interpolation path
            parts = [f"{data['path']} path {of}", f"loss barrier {_number(data.get('loss_barrier'), 'loss')}"]
        else:
            parts = [f"target {data.get('target')} step {data.get('target_step')} {of}"]
        parts += [f"{name} {_number(metrics[name], name)}" for name in ("accuracy", "loss", "objective")
                  if isinstance(metrics.get(name), int | float)]
        return " · ".join(parts)
    if event.type == "failed":
        return f"{data.get('code')}: {data.get('message', '')}"
    return " ".join(f"{key}={value}" for key, value in data.items())


def event_line(event: Event) -> Text:
    when = f"{event.created_at.astimezone():%H:%M:%S}" if event.created_at else "        "
    return Text(f"{when} ") + Text(f"{event.type:<16}", style="bold") + Text(describe_event(event))


def _number(value: float | None, name: str) -> str:
    if not isinstance(value, int | float):
        return "—"
    return percent(value) if name == "accuracy" else f"{value:.4g}"


def sparkline(values: list[float | None], width: int = 50) -> str:
    """A one-line plot of `values` scaled between their min and max; a gap (None) is a space.

    More values than `width` are averaged in `width` buckets, so the line keeps its shape.
    """
    if len(values) > width:
        buckets = [values[len(values) * i // width: len(values) * (i + 1) // width] for i in range(width)]
        values = [_mean([v for v in b if v is not None]) for b in buckets]
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = high - low
    return "".join(" " if v is None else SPARK[0 if span == 0 else round((v - low) / span * (len(SPARK) - 1))]
                   for v in values)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def accuracy_table(steps_by_target: dict[int, list[dict[str, Any]]]) -> Table | None:
    """Per target: a sparkline of held-out accuracy per step, with first, best (at step) and last."""
    rows = []
    for target, steps in sorted(steps_by_target.items()):
        ordered = sorted(steps, key=lambda s: s.get("step", 0))
        accuracies = [s.get("accuracy") if isinstance(s.get("accuracy"), int | float) else None for s in ordered]
        present = [(a, s.get("step")) for a, s in zip(accuracies, ordered, strict=True) if a is not None]
        if not present:
            continue
        best, best_step = max(present, key=lambda p: p[0])
        rows.append((str(target), sparkline(accuracies, 30), percent(present[0][0]),
                     f"{percent(best)} @{best_step}", percent(present[-1][0]), str(len(ordered))))
    if not rows:
        return None
    table = Table(box=box.SIMPLE, pad_edge=False, title="held-out accuracy per step", title_justify="left")
    for column in ("target", "per step", "first", "best", "last", "steps"):
        table.add_column(column, no_wrap=True, justify="left" if column in {"target", "per step"} else "right")
    for row in rows:
        table.add_row(*row)
    return table
