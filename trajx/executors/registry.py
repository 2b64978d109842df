"""The executor registry: job kind -> the function that runs a spec of that kind."""

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trajx.errors import InvalidInput
from trajx.executors.manifest import ResultManifest

Resolve = Callable[[str], Path]  # artifact ref of the spec -> local file


@dataclass(frozen=True)
class RunProgress:
    """`done` of `total` units of the whole job are finished; `data` says what just finished
    (for a transfer: `target`, `target_step`, `metrics`)."""

    done: int
    total: int
    data: dict[str, Any] = field(default_factory=dict)


# The most bytes of tensors a record carries beyond what resuming cannot do without (a
# transfer step's gradient pair, an averaged candidate's state); larger ones are recomputed
# by a resume. Writing ~130-300 KiB measured 10-50 ms where recomputing a transfer's pair
# took 20-300 ms of CPU (bench/bench_resume.py); a 100M-parameter model's 400 MB would not be.
RECORD_TENSORS_MAX_BYTES = 4 * 2**20


@dataclass(frozen=True)
class Checkpoint:
    """What a run needs to continue after its completed unit `step` (1, 2, ...): `state` in
    the executor's own encoding, `data` JSON facts, whose `unit` names the unit for people
    (`step 3`, `candidate uniform last=5`, `matching`: the `resumed` event repeats it).
    The caller keeps them; an executor that gets the ones of steps 1..r back
    (`RunContext.resume`) continues at step r + 1."""

    step: int
    state: bytes
    data: dict[str, Any] = field(default_factory=dict)


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RunContext:
    """How an executor talks back: progress reports, and a cancel check between steps
    (True means stop: raise trajx.errors.Cancelled). An executor that can resume reads
    `resume` (checkpoints of steps 1..r of an earlier attempt, in order) and reports each
    completed step to `on_checkpoint`. One that stops early with steps done offers what it
    reached to `on_partial` before raising: a function that writes those results, marked
    partial, under its `out_dir` and returns their manifest; the caller runs it only if it
    keeps them (a cancel, not a hand-over to another worker)."""

    on_progress: Callable[[RunProgress], None] = lambda progress: None
    should_cancel: Callable[[], bool] = _never
    resume: Sequence[Checkpoint] = ()
    on_checkpoint: Callable[[Checkpoint], None] = lambda checkpoint: None
    on_partial: Callable[[Callable[[], ResultManifest]], None] = lambda write: None


class Executor(Protocol):
    def __call__(self, spec: Any, resolve: Resolve, out_dir: Path,
                 ctx: RunContext) -> ResultManifest:
        """Run `spec`, reading each artifact ref through `resolve` (ref -> local file) and
        writing result files under the empty directory `out_dir`; return their manifest.
        Raises TrajxError subclasses (InvalidInput before expensive work, Cancelled, ...)."""
        ...


# kind -> executor, or "module:function" for built-ins imported on first use (torch).
_EXECUTORS: dict[str, Executor | str] = {"transfer": "trajx.executors.transfer:run_transfer",
                                         "average": "trajx.executors.average:run_average",
                                         "align": "trajx.executors.align:run_align",
                                         "merge": "trajx.executors.merge:run_merge"}


def register_executor(kind: str, executor: Executor | str) -> None:
    """Run specs of `kind` with `executor` (a callable, or "module:function" imported lazily)."""
    _EXECUTORS[kind] = executor


def executor_for(kind: str) -> Executor:
    """The executor of `kind`; InvalidInput `unknown_kind` when none is registered."""
    executor = _EXECUTORS.get(kind)
    if executor is None:
        raise InvalidInput(f"no executor for job kind {kind!r}; known kinds: {sorted(_EXECUTORS)}",
                           code="unknown_kind", field="kind")
    if isinstance(executor, str):
        module_name, name = executor.split(":")
        executor = _EXECUTORS[kind] = getattr(importlib.import_module(module_name), name)
    return executor
