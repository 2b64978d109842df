"""`trajx upload|submit|status|wait|cancel|download|jobs|events`: the service from a shell.

Exit codes (stable; docs/usage.md and docs/ci.md "Exit codes"): 0 success, 1 job failed,
2 usage, auth or invalid input (every 4xx answer, a local file that cannot be read
or written), 3 job cancelled, 4 wait timed out, 5 server unreachable (or answering
5xx), 6 an unexpected error on this side. `--json` prints exactly one JSON document
on stdout, whatever happens.
"""

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from trajx.cli.app import app
from trajx.cli.remote.hints import setup_hint
from trajx.cli.remote.output import (
    InternalError,
    LocalFileError,
    Output,
    job_exit_code,
    job_table,
    rows_table,
)
from trajx.cli.remote.specfiles import in_local_words, upload_local_file, upload_spec_files
from trajx.client import ApiError, Client, ClientError, InvalidLocalInput, Job, WaitTimeout
from trajx.client.ci import default_idempotency_key, write_github_outputs
from trajx.client.config import resolve_api_key, resolve_url
from trajx.client.keymap import KeyMapping
from trajx.console.readable import accuracy_table, event_line, jobs_table
from trajx.console.watch import JobWatcher, LatestMetrics, TransferBars
from trajx.method_registry import methods_help

UrlOpt = Annotated[str | None, typer.Option(
    "--url", envvar="TRAJX_URL", show_envvar=True, help="Server URL (default: http://127.0.0.1:8000)")]
KeyOpt = Annotated[str | None, typer.Option(
    "--api-key", envvar="TRAJX_API_KEY", show_envvar=True,
    help="API key (default: the embedded server's local key file)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout, all else on stderr.")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", min=0, help="Give up waiting after S seconds (exit 4).")]
DownloadOpt = Annotated[Path | None, typer.Option("--download", help="Download the results into DIR.")]
KeyOptOfCheckpoint = Annotated[str | None, typer.Option(
    "--key", help="Where a nested .pt keeps its state dict (default: the file itself, else the first of "
    "state_dict, model, model_state_dict); dots walk nested dicts.")]
StripOpt = Annotated[list[str] | None, typer.Option(
    "--strip-prefix", help="Strip this prefix from checkpoint tensor names (repeatable). module. and "
    "_orig_mod. (and model. in .pt files) are stripped when every name has them.")]


@contextmanager
def _session(url: str | None, api_key: str | None, json_mode: bool) -> Iterator[tuple[Client, Output]]:
    """A client and an output; any error inside becomes a report (JSON under --json) and an exit code.

    Client errors carry their own code; a local file problem (OSError) exits 2; anything
    else is a bug on this side and exits 6, never 1, which means "the job failed".
    """
    out = Output(json_mode)
    base_url = resolve_url(url)
    key_sent = resolve_api_key(api_key, base_url) is not None
    try:
        with TransferBars(out.err) as bars, Client(url, api_key, progress=bars) as client:
            yield client, out
    except typer.Exit:
        raise  # the command's own exit code (typer.Exit is a RuntimeError)
    except WaitTimeout as exc:
        write_github_outputs(exc.job)  # the job keeps running: a later step may cancel it by id
        out.fail(exc)
    except ClientError as exc:
        out.fail(exc, setup_hint(exc, base_url, key_sent))
    except OSError as exc:
        out.fail(LocalFileError(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)))
    except Exception as exc:  # noqa: BLE001  (reported with exit 6, not swallowed)
        out.err.print_exception()  # the traceback, on stderr, for a bug report
        out.fail(InternalError(f"{type(exc).__name__}: {exc}"))


def _wait(client: Client, out: Output, job: Job, timeout: float | None) -> Job:
    with JobWatcher(out.err, LatestMetrics(client, job.id)) as watcher:
        return client.wait(job.id, timeout, on_update=watcher.on_update)


def _download_results(client: Client, job: Job, out_dir: Path) -> dict[str, str]:
    """Download every result file of a finished job under `out_dir`; relative path -> local path."""
    if job.status != "succeeded":
        raise InvalidLocalInput(f"job {job.id} is {job.status}; only a succeeded job has results")
    return {file.path: str(client.download_result(file, out_dir)) for file in job.files}


def _results_if_asked(client: Client, job: Job, out_dir: Path | None) -> dict[str, str] | None:
    """`--download DIR`: the results of a succeeded job; nothing for a failed or cancelled one."""
    return _download_results(client, job, out_dir) if out_dir and job.status == "succeeded" else None


def _finish(out: Output, job: Job, downloads: dict[str, str] | None = None, **extra: object) -> None:
    """Print the job (and what was done locally), write CI outputs, exit by the job's status."""
    write_github_outputs(job, downloads)
    downloaded = [] if downloads is None else [_downloads_table(downloads)]
    out.document({"job": job.raw, **extra, **({"downloads": downloads} if downloads is not None else {})},
                 job_table(job), *downloaded)
    raise typer.Exit(job_exit_code(job))


def _downloads_table(downloads: dict[str, str]):
    return rows_table(["downloaded to"], [{"downloaded to": path} for path in downloads.values()])


@app.command()
def upload(files: Annotated[list[Path], typer.Argument(
               help="safetensors, .pt/.pth or sharded *.safetensors.index.json files")],
           key: KeyOptOfCheckpoint = None, strip_prefix: StripOpt = None,
           url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """Upload files as artifacts (skipped when the server has the bytes; .pt converted and names
    mapped locally, the mapping applied is printed)."""
    mapping = KeyMapping(key, tuple(strip_prefix or ()))
    with _session(url, api_key, json_out) as (client, out), tempfile.TemporaryDirectory() as tmp:
        artifacts = [upload_local_file(client, path, Path(tmp) / str(i), mapping, out.info).raw
                     for i, path in enumerate(files)]
        out.document({"data": artifacts}, rows_table(["id", "name", "kind", "size", "sha256"], artifacts))


@app.command(epilog=methods_help())
def submit(spec_file: Annotated[Path, typer.Argument(help="job spec JSON")],
           wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to finish.")] = False,
           timeout: TimeoutOpt = None, download: DownloadOpt = None,
           idempotency_key: Annotated[str | None, typer.Option(
               "--idempotency-key", help="Reattach to the job created with this key "
               "(default: derived from the CI run and the spec; none outside CI)")] = None,
           webhook: Annotated[str | None, typer.Option("--webhook", help="URL to notify (signed).")] = None,
           name: Annotated[str | None, typer.Option("--name", help="What to call the run (editable later).")] = None,
           label: Annotated[list[str] | None, typer.Option("--label", help="A label to find the run by "
                                                           "(repeatable).")] = None,
           key: KeyOptOfCheckpoint = None, strip_prefix: StripOpt = None,
           url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """Submit a job spec; local file paths in it are uploaded first and replaced by artifact ids."""
    with _session(url, api_key, json_out) as (client, out):
        try:
            spec = json.loads(spec_file.read_text())
        except OSError as exc:
            raise InvalidLocalInput(f"{spec_file}: cannot read the spec: {exc.strerror}") from exc
        except ValueError as exc:  # also UnicodeDecodeError
            raise InvalidLocalInput(f"{spec_file}: not a JSON document: {exc}") from exc
        resolved, uploaded = upload_spec_files(client, spec, spec_file.parent,
                                               KeyMapping(key, tuple(strip_prefix or ())), out.info)
        key = idempotency_key or default_idempotency_key(resolved)
        try:
            job = client.create_job(resolved, idempotency_key=key, webhook={"url": webhook} if webhook else None,
                                    name=name, labels=label)
        except ApiError as exc:
            raise in_local_words(exc, uploaded, spec) from None
        reattached = job.replayed
        if reattached:
            out.info(f"reattached to {job.id} ({job.status}): it was created before with "
                     f"idempotency key {key!r}")
        else:
            out.info(f"submitted {job.id} ({job.status})")
        out.info(f"dashboard: {dashboard_url(client, job)}")
        if wait or download:
            job = _wait(client, out, job, timeout)
        _finish(out, job, _results_if_asked(client, job, download), uploaded=uploaded, reattached=reattached)


@app.command()
def status(job_id: str, url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """Show a job; exits 1 if it failed, 3 if it was cancelled."""
    with _session(url, api_key, json_out) as (client, out):
        job = client.get_job(job_id)
        chart = None if json_out else accuracy_table(_steps_by_target(client, job))
        if chart is not None:
            out.out.print(chart)
        out.info(f"dashboard: {dashboard_url(client, job)}")
        _finish(out, job)


def dashboard_url(client: Client, job: Job) -> str:
    """The job's page on the server's dashboard."""
    return f"{client.base_url}/#/jobs/{job.id}"


def _steps_by_target(client: Client, job: Job) -> dict[int, list[dict]]:
    """Each target's per-step metrics: from a succeeded job's report, else from the progress
    events (each carries every step since the previous one)."""
    report_id = (job.result or {}).get("report")
    if isinstance(report_id, str):
        report = client.artifact_json(report_id)
        return {i: t.get("steps") or [] for i, t in enumerate(report.get("targets") or [])}
    steps: dict[int, list[dict]] = {}
    for event in client.events(job.id):
        if event.type != "progress":
            continue
        data = event.data or {}
        for one in data.get("steps") or [data]:
            if isinstance(one.get("target"), int):
                steps.setdefault(one["target"], []).append({**(one.get("metrics") or {}), "step": one.get("target_step")})
    return steps


@app.command("wait")
def wait_command(job_id: str, timeout: TimeoutOpt = None, download: DownloadOpt = None,
                 url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """Wait for a job to finish; exit code by its final status (4 on timeout)."""
    with _session(url, api_key, json_out) as (client, out):
        job = _wait(client, out, client.get_job(job_id), timeout)
        _finish(out, job, _results_if_asked(client, job, download))


@app.command()
def cancel(job_id: str, url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """Ask a job to stop (a running job stops at its next step)."""
    with _session(url, api_key, json_out) as (client, out):
        job = client.cancel(job_id)
        write_github_outputs(job)
        out.document({"job": job.raw}, job_table(job))


@app.command()
def download(ref: Annotated[str, typer.Argument(help="a job id (all its results) or an artifact id")],
             out_dir: Annotated[Path, typer.Option("--out", help="Directory to write into.")] = Path("."),
             url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """Download a job's result files or one artifact (resumable, sha256-verified)."""
    with _session(url, api_key, json_out) as (client, out):
        if ref.startswith("job_"):
            downloads = _download_results(client, client.get_job(ref), out_dir)
        else:
            # Only the last path component of the server-side name: never write outside out_dir.
            name = Path(client.get_artifact(ref).name or ref).name or ref
            downloads = {name: str(client.download(ref, out_dir / name))}
        out.document({"downloads": downloads}, _downloads_table(downloads))


@app.command()
def jobs(status_filter: Annotated[str | None, typer.Option("--status", help="Only jobs in this status.")] = None,
         kind: Annotated[str | None, typer.Option("--kind", help="Only jobs of this kind (transfer, average, "
                                                  "align, ...).")] = None,
         method: Annotated[str | None, typer.Option("--method", help="Only jobs with this method.")] = None,
         arch: Annotated[str | None, typer.Option("--arch", help="Only jobs of this architecture.")] = None,
         label: Annotated[str | None, typer.Option("--label", help="Only jobs with this label.")] = None,
         name: Annotated[str | None, typer.Option("--name", help="Only jobs whose name holds this text.")] = None,
         limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 20,
         url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """List your jobs, newest first."""
    with _session(url, api_key, json_out) as (client, out):
        found = client.list_jobs(status_filter, limit, kind=kind, method=method, arch=arch, label=label, q=name)
        out.document({"data": [job.raw for job in found]}, jobs_table(found))


@app.command()
def events(job_id: str,
           follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events as they happen "
                                                "until the job finishes (with --json: one document at the end).")] = False,
           url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """List a job's events (created, claimed, progress, finished, webhook deliveries)."""
    with _session(url, api_key, json_out) as (client, out):
        found = []
        for event in client.follow_events(job_id) if follow else client.events(job_id):
            found.append(event.raw)
            if not json_out:
                out.out.print(event_line(event))
        if json_out:
            out.document({"data": found})
