"""What the remote commands print: one JSON document on stdout, or rich text for people.

With `--json`, stdout carries exactly one JSON object (`job`, `data`, `downloads`
or `error` keys) and every human message goes to stderr, so a pipeline can parse
stdout without filtering.
"""

import json
import sys
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trajx.client.errors import (
    EXIT_INTERNAL,
    EXIT_JOB_CANCELLED,
    EXIT_JOB_FAILED,
    ApiError,
    ClientError,
    WaitTimeout,
)
from trajx.client.models import Job
from trajx.console.readable import progress_text, what

# Exit codes per final job status; anything not finished yet is a success of the command.
_STATUS_EXIT = {"failed": EXIT_JOB_FAILED, "cancelled": EXIT_JOB_CANCELLED}


class LocalFileError(ClientError):
    """A file on this machine could not be read or written (an OSError): exit 2."""

    code = "local_file_error"


class InternalError(ClientError):
    """An unexpected exception in the CLI itself: exit 6, so it never reads as "job failed"."""

    exit_code = EXIT_INTERNAL
    code = "internal_error"


def job_exit_code(job: Job) -> int:
    return _STATUS_EXIT.get(job.status, 0)


class Output:
    """Routes a command's result to stdout (JSON or tables) and its chatter to stderr."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        self.err.print(message)

    def document(self, doc: dict[str, Any], *renderables: Any) -> None:
        """Print `doc` as JSON in --json mode, else the human renderables."""
        if self.json_mode:
            sys.stdout.write(json.dumps(doc, default=str) + "\n")
            sys.stdout.flush()
        else:
            for renderable in renderables:
                self.out.print(renderable)

    def fail(self, error: ClientError, hint: str | None = None) -> NoReturn:
        """Report a client error (JSON document or stderr text), with a hint at the fix when
        one is known, and exit with its code."""
        doc: dict[str, Any] = {"error": {**error.to_json(), **({"hint": hint} if hint else {})}}
        if isinstance(error, WaitTimeout):
            doc["job"] = error.job.raw
        if self.json_mode:
            self.document(doc)
        else:
            # Unwrapped: a URL or a path in the message must stay whole to be copied.
            self.err.print(f"[red]error:[/red] {escape(str(error))}", markup=True, soft_wrap=True)
            for item in error.errors if isinstance(error, ApiError) else []:
                message = item.get("message", "")
                if message and message in str(error):
                    continue  # the one problem the error line already says
                where = item.get("field") or item.get("artifact") or item.get("tensor") or ""
                self.err.print(f"  - {where}: {message}" if where else f"  - {message}", markup=False, soft_wrap=True)
            if hint:
                self.err.print(f"[yellow]hint:[/yellow] {escape(hint)}", markup=True, soft_wrap=True)
        raise typer.Exit(error.exit_code)


def job_table(job: Job) -> Table:
    """Key facts of one job: status, progress, error, its summary (job-wide values, then
    per target), result files."""
    table = Table(show_header=False, box=None)
    table.add_row("job", job.id)
    table.add_row("status", job.status)
    if progress_text(job):
        table.add_row("progress", progress_text(job))
    if what(job):
        table.add_row("what", what(job))
    if job.error:
        table.add_row("error", f"{job.error.code}: {job.error.message or ''}")
    for key, value in (job.summary or {}).items():  # job-wide facts of any kind (best_accuracy, ...)
        if value is not None and not isinstance(value, dict | list):
            table.add_row(key, _short(value))
    for i, target in enumerate((job.summary or {}).get("targets") or []):
        metrics = ", ".join(f"{k}={_short(v)}" for k, v in target.items() if v is not None)
        table.add_row(f"target {i}", metrics)
    for path, artifact_id in job.result_files().items():
        table.add_row(path, artifact_id)
    return table


def rows_table(columns: list[str], rows: list[dict[str, Any]]) -> Table:
    """A table of `columns` taken from each row dict (missing values left blank)."""
    table = _table(columns)
    for row in rows:
        table.add_row(*(_short(row.get(column, "")) for column in columns))
    return table


def _table(columns: list[str]) -> Table:
    table = Table(box=box.SIMPLE)
    for column in columns:
        # Ids and paths are copied into other commands: never cut them (nor the short dates).
        table.add_column(column, no_wrap=column in {"id", "created", "downloaded to"})
    return table


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)[:80]
    return str(value)
