"""What people read: the jobs table at 80 columns, event lines, sparklines, the job bar."""

import io
import re
from datetime import UTC, datetime

from rich.console import Console

from trajx.client.models import Event, Job
from trajx.console.readable import accuracy_table, describe_event, jobs_table, sparkline
from trajx.console.watch import JobWatcher, bar_fields

JOB_ID = "job_01a23be7e97099cb2af77dfed6f5f38c"


def job(status: str, step: int = 0, total: int = 0, **extra) -> Job:
    doc = {"id": JOB_ID, "status": status, "kind": "transfer", "created_at": "2026-12-03T12:36:24Z",
           "spec": {"method": "fgmt", "arch": {"name": "mlp"}}, "progress": {"step": step, "total": total}, **extra}
    return Job.from_dict(doc)


def render(renderable, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def test_jobs_table_fits_80_columns_with_every_fact_and_whole_ids():
    jobs = [
        job("succeeded", 12, 12, started_at="2026-12-03T12:36:30Z", finished_at="2026-12-03T12:36:35Z",
            summary={"targets": [{"best_accuracy": 0.912}, {"best_accuracy": 0.934}]}),
        job("running", 5, 30, started_at="2026-12-03T12:36:30Z"),
        job("queued"),
        job("failed", error={"code": "permutation_spec_mismatch", "message": "bad"}),
    ]
    text = render(jobs_table(jobs), 80)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert text.count(JOB_ID) == 4  # never cut
    for fact in ("succeeded", "running", "queued", "failed", "transfer · fgmt · mlp", "93.4%", "5/30 16%",
                 "12/12 100%", "5.0 s"):
        assert fact in text, fact
    assert "permutation_spec_mismatch" in text.replace("\n", "").replace(" ", "") or \
        "permutation_spec_mis" in text  # folded within its column, never dropped
    assert "0/0" not in text


def test_event_lines_are_readable():
    progress = Event.from_dict({"id": 7, "type": "progress", "created_at": "2026-12-03T12:36:35Z", "data": {
        "step": 3, "total": 30, "target": 0, "target_step": 3,
        "metrics": {"accuracy": 0.8125, "loss": 0.61234, "objective": 1234.5, "gradient_seconds": 0.01}}})
    assert describe_event(progress) == "target 0 step 3 (3/30) · accuracy 81.2% · loss 0.6123 · objective 1234"
    failed = Event.from_dict({"id": 8, "type": "failed", "data": {"code": "non_finite_loss", "message": "NaN"}})
    assert describe_event(failed) == "non_finite_loss: NaN"


def test_sparkline_scales_between_min_and_max_and_keeps_gaps():
    assert sparkline([0.1, 0.5, 0.9]) == "▁▅█"
    assert sparkline([0.3, None, 0.3]) == "▁ ▁"
    assert len(sparkline([float(i) for i in range(1000)], width=30)) == 30
    assert sparkline([None, None]) == ""


def test_accuracy_table_shows_each_target_with_best_step():
    steps = {0: [{"step": s, "accuracy": a} for s, a in ((1, 0.2), (2, 0.9), (3, 0.7))],
             1: [{"step": 1, "accuracy": 0.5}]}
    text = render(accuracy_table(steps), 80)
    assert "▁█▆" in text and "90.0% @2" in text and "20.0%" in text
    assert accuracy_table({0: [{"step": 1, "loss": 2.0}]}) is None  # no held-out data, no chart


def test_job_bar_says_queued_not_0_of_0_and_shows_accuracy_with_its_target():
    queued = bar_fields(job("queued"), None)
    assert queued["progress"] == "queued" and queued["total"] is None and queued["accuracy"] == ""
    started = job("running", 6, 30, started_at="2026-12-03T12:40:00Z")
    running = bar_fields(started, {"target": 1, "metrics": {"accuracy": 0.875}},
                         now=datetime(2026, 12, 3, 12, 41, 0, tzinfo=UTC))
    # Elapsed counts from the job's start (not the command's); 6 of 30 steps in 60 s leaves 240 s.
    assert (running["progress"], running["total"], running["completed"], running["accuracy"]) == \
        ("6/30 20%", 30, 6, "t1 acc 87.5%")
    assert (running["elapsed"], running["eta"]) == ("1:00", "eta 4:00")


def test_job_bar_fits_80_columns_with_elapsed_and_eta_whole():
    terminal = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    watcher = JobWatcher(terminal, lambda _: {"target": 3, "metrics": {"accuracy": 0.9}})
    with watcher:
        watcher.on_update(job("running", 456, 1000, started_at="2026-12-03T12:40:00Z"))
        bar = watcher._bar
        [text] = render(bar.make_tasks_table(bar.tasks), 80).splitlines()
    assert "456/1000 45%" in text and "t3 acc 90.0%" in text
    assert re.search(r"\d+:\d\d:\d\d eta \d+:\d\d", text), text  # neither cut


def test_logs_get_a_progress_line_now_and_then():
    out = io.StringIO()
    watcher = JobWatcher(Console(file=out, width=200, color_system=None), log_every=0.0)
    with watcher:
        for step in (0, 5, 10):
            watcher.on_update(job("running", step, 10, started_at="2026-12-03T12:40:00Z"))
        watcher.on_update(job("succeeded", 10, 10, started_at="2026-12-03T12:40:00Z"))
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{JOB_ID}: running" and lines[-1] == f"{JOB_ID}: succeeded"
    assert lines[1].startswith(f"{JOB_ID} running 5/10 50%") and "eta" in lines[1]
    assert lines[2].startswith(f"{JOB_ID} running 10/10 100%")


def test_datetime_parsing_is_aware():
    assert job("queued").created_at == datetime(2026, 12, 3, 12, 36, 24, tzinfo=UTC)
