"""CI integration: run-derived idempotency keys and GitHub Actions outputs.

A CI step that is retried (same run, same attempt, same step, same spec) must
reattach to the job it already created instead of starting a second one, so the
default idempotency key is derived from those four things. Under GitHub Actions
the job id, status and result artifact ids go to `$GITHUB_OUTPUT`, and a short
table to `$GITHUB_STEP_SUMMARY`.
"""

import hashlib
import json
import os
from typing import Any

from trajx.client.models import Job

_RUN_VARS = ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB", "GITHUB_ACTION")


def spec_hash(spec: dict[str, Any]) -> str:
    """sha256 of the spec's canonical JSON (key order and spacing do not matter)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def default_idempotency_key(spec: dict[str, Any], environ: dict[str, str] | None = None) -> str | None:
    """`gh-<run id>-<attempt>-<job>-<step>-<spec hash>` under GitHub Actions, else None.

    `TRAJX_RUN_ID` stands in for `GITHUB_RUN_ID` on other CI systems.
    """
    env = os.environ if environ is None else environ
    run_id = env.get("GITHUB_RUN_ID") or env.get("TRAJX_RUN_ID")
    if not run_id:
        return None
    parts = [run_id] + [env.get(name, "") for name in _RUN_VARS[1:]]
    return "-".join(["gh", *parts, spec_hash(spec)[:24]])


def write_github_outputs(job: Job, downloads: dict[str, str] | None = None,
                         environ: dict[str, str] | None = None) -> None:
    """Append outputs and a step summary when running under GitHub Actions; else do nothing."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_OUTPUT"):
        outputs = {
            "job-id": job.id,
            "status": job.status,
            "error-code": job.error.code if job.error else "",
            "artifact-ids": json.dumps(job.result_files(), separators=(",", ":")),
        }
        if downloads:
            outputs["downloads"] = json.dumps(downloads, separators=(",", ":"))
        with open(env["GITHUB_OUTPUT"], "a", encoding="utf-8") as f:
            f.writelines(f"{key}={value}\n" for key, value in outputs.items())
    if env.get("GITHUB_STEP_SUMMARY"):
        with open(env["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:
            f.write(step_summary(job))


def step_summary(job: Job) -> str:
    """A short markdown report: job, status, and one row per target of the summary."""
    lines = [f"### trajx job `{job.id}`: **{job.status}**", ""]
    if job.error:
        lines += [f"Error `{job.error.code}`: {job.error.message or ''}", ""]
    targets = (job.summary or {}).get("targets") or []
    if targets:
        lines += ["| target | last accuracy | best accuracy | best step |", "|---|---|---|---|"]
        for i, target in enumerate(targets):
            lines.append(f"| {i} | {_fmt(target.get('last_accuracy'))} | "
                         f"{_fmt(target.get('best_accuracy'))} | {target.get('best_step', '')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))
