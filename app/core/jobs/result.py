"""The `result` of a job as the API and webhooks show it: the executor's manifest.

The worker stores `{"files": [{role, target, path, sha256, size, metadata, artifact}]}`
(trajx.executors.ResultFile plus the artifact id). Readers of the older resource shape
also get `targets: [{role: artifact id}]` and, for job-wide files, `{role: artifact id}`
(a transfer's `report`), grouped from the same entries.
"""

from typing import Any


def public_result(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """`job.result` with the grouped views added (None stays None)."""
    if result is None or "files" not in result:
        return result
    targets: list[dict[str, str]] = []
    job_wide: dict[str, str] = {}
    for file in result["files"]:
        index = file["target"]
        if index is None:
            job_wide[file["role"]] = file["artifact"]
            continue
        targets.extend({} for _ in range(index + 1 - len(targets)))
        targets[index][file["role"]] = file["artifact"]
    return {**job_wide, "targets": targets, "files": result["files"]}
