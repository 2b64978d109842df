"""One executor per job kind: `executor_for(spec.kind)(spec, resolve, out_dir, ctx) -> ResultManifest`.

The spec registry (`trajx.job_spec.JOB_KINDS`) says what a kind's job document looks like;
this registry says how to run it. The worker and `trajx run` both look the executor up
here, so a new kind is one spec model plus one `register_executor` call.
Importing this package does not import torch: built-in executors load on first use.
"""

from trajx.executors.manifest import ResultFile, ResultManifest, file_entry
from trajx.executors.registry import (
    Checkpoint,
    Executor,
    Resolve,
    RunContext,
    RunProgress,
    executor_for,
    register_executor,
)

__all__ = ["Checkpoint", "Executor", "Resolve", "ResultFile", "ResultManifest", "RunContext", "RunProgress", "executor_for",
           "file_entry", "register_executor"]
