"""The `transfer` executor: files in, engine, files out (docs/architecture.md).

`run_transfer` validates every input before any expensive work (architecture and config,
each checkpoint against the architecture, the data against the model, the spec
derivation and the step plan), then runs the transfer and writes, under `out_dir`:

    target-{i}/last.safetensors  best.safetensors  [permutations.safetensors]
    target-{i}/[trajectory.safetensors]  [average.safetensors]  metrics.json (best step, per-step metrics and seconds)
    report.json (spec, permutation spec, summary, every target's steps, run timings, versions)

and returns their manifest. The worker and `trajx run` reach it through
`trajx.executors.executor_for("transfer")`; it knows nothing about HTTP or the database.
"""

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trajx.engine.batches import Dataset
from trajx.engine.matching.solvers import get_solver
from trajx.engine.options import MatchingOptions, TransferOptions
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import TargetResult, resolve_device, transfer
from trajx.engine.transfer.methods import STRATEGIES, Method
from trajx.engine.transfer.schedule import plan_trajectory
from trajx.errors import InvalidInput
from trajx.executors.common import tensor_metadata, versions, write_json
from trajx.executors.inputs import JobInputs, open_inputs
from trajx.executors.manifest import ResultFile, ResultManifest, file_entry
from trajx.executors.registry import Resolve, RunContext, RunProgress
from trajx.io import save_tensors
from trajx.job_spec import TransferJob, TransferParams
from trajx.method_registry import TRANSFER_METHODS
from trajx.resources import peak_memory_bytes, reset_peak_memory


@dataclass
class _Inputs:
    job: JobInputs  # the model and how its checkpoint files name tensors
    source: list[dict[str, torch.Tensor]]
    targets: list[dict[str, torch.Tensor]]
    method: Method  # built with the per-target inputs its registry entry declares
    train: Dataset
    eval: Dataset | None


def run_transfer(spec: TransferJob, resolve: Resolve, out_dir: Path, ctx: RunContext) -> ResultManifest:
    """Run `spec`, write its result files under `out_dir`, return their manifest.

    `resolve` maps each artifact ref of the spec to a local safetensors file. Progress
    counts (target, step) results: `total` is targets × steps. The manifest's summary is
    `{"method", "device", "seconds", "targets": [{last_accuracy, best_accuracy,
    best_step, last_loss}]}` (accuracies/loss are None without eval data). Raises
    InvalidInput / UnsupportedModel before any transfer work when an input is unusable,
    NonFiniteLoss or Cancelled from the engine.
    """
    started = time.perf_counter()
    device = resolve_device(spec.params.device)
    if device.type == "cuda":
        # cuBLAS is only deterministic with a fixed workspace; it must be set before first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    inputs = _load_inputs(spec, resolve)
    model = inputs.job.model
    perm_spec = derive_spec(model, inputs.job.example, explicit=spec.permutation_spec)
    try:
        plan_trajectory(spec.params.schedule, spec.params.steps, len(spec.source))
    except ValueError as exc:
        raise InvalidInput(f"params.steps: {exc}", code="invalid_params", field="params.steps") from None

    done, total = 0, len(spec.targets) * spec.params.steps

    def progress(step: int, steps: int, target: int, metrics: dict[str, float]) -> None:
        # Targets may interleave: the job's count reaches `total` exactly with the last result.
        nonlocal done
        done += 1
        ctx.on_progress(RunProgress(done, total, {"target": target, "target_step": step, "metrics": metrics}))

    reset_peak_memory(device)
    result = transfer(model, perm_spec, inputs.source, inputs.targets, inputs.train,
                      engine_options(spec.params, device), method=inputs.method,
                      solver=get_solver(spec.params.matching.solver),
                      eval_data=inputs.eval, keep_trajectory=spec.outputs.trajectory, task=inputs.job.task,
                      on_progress=progress, should_cancel=ctx.should_cancel,
                      average_last=spec.outputs.average.last if spec.outputs.average else None)
    seconds = time.perf_counter() - started

    files = [entry for index, target in enumerate(result.targets)
             for entry in _write_target(out_dir, index, target, spec, inputs.job)]
    summary = {
        "method": spec.method,
        "device": result.device,
        "seconds": seconds,
        "targets": [_target_summary(t) for t in result.targets],
    }
    report = {
        "spec": spec.model_dump(mode="json"),
        "permutation_spec": perm_spec.to_json(),
        "summary": summary,
        "targets": [_target_metrics(t) for t in result.targets],
        "timings": {"total_seconds": seconds, **asdict(result.timings),
                    "peak_memory_bytes": peak_memory_bytes(device)},
        "versions": versions(),
    }
    write_json(out_dir / "report.json", report)
    files.append(file_entry(out_dir, out_dir / "report.json", "report"))
    return ResultManifest(files, summary)


def engine_options(params: TransferParams, device: torch.device) -> TransferOptions:
    """The spec's `params` as the engine's options, on `device` as resolved once for the job
    (the solver is chosen separately)."""
    matching = MatchingOptions(max_iter=params.matching.max_iter, tol=params.matching.tol)
    return TransferOptions(**params.model_dump(exclude={"matching", "device"}), matching=matching,
                           device=device.type)


def _target_metrics(target: TargetResult) -> dict[str, Any]:
    metrics = {"best_step": target.best_step, "steps": target.steps}
    if target.average is not None:
        metrics["average"] = target.average_metrics
    return metrics


def _load_inputs(spec: TransferJob, resolve: Resolve) -> _Inputs:
    """Every input, validated, before anything expensive runs."""
    job = open_inputs(spec.arch, resolve)
    source = [job.checkpoint(ref, f"source[{i}]") for i, ref in enumerate(spec.source)]
    targets = [job.checkpoint(t.checkpoint, f"targets[{i}].checkpoint") if t.checkpoint is not None
               else job.init(t.seed, f"targets[{i}].seed") for i, t in enumerate(spec.targets)]
    declared = {need: [job.checkpoint(getattr(t, need), f"targets[{i}].{need}")
                       for i, t in enumerate(spec.targets)]
                for need in TRANSFER_METHODS[spec.method].needs}  # e.g. oracle: `trained`
    job.model.load_state_dict(source[0])
    train = job.data(spec.train_data, "train_data")
    eval_data = None if spec.eval_data is None else job.data(spec.eval_data, "eval_data")
    return _Inputs(job, source, targets, STRATEGIES[spec.method](**declared), train, eval_data)


def _write_target(out_dir: Path, index: int, target: TargetResult, spec: TransferJob,
                  job: JobInputs) -> list[ResultFile]:
    """Target `index`'s files under `target-{index}/`, with their manifest entries; tensors
    under their checkpoint names."""
    directory = out_dir / f"target-{index}"
    common = tensor_metadata("transfer", spec.arch, method=spec.method)
    outputs = {"last": (job.saved(target.last), {"step": len(target.steps)}),  # role -> (tensors, facts)
               "best": (job.saved(target.best), {"step": target.best_step})}
    if spec.outputs.permutations:
        outputs["permutations"] = (target.permutation, {})
    if target.average is not None:
        outputs["average"] = (job.saved(target.average), {"average_last": spec.outputs.average.last,
                                               **target.average_metrics})
    if target.trajectory is not None:
        outputs["trajectory"] = ({f"step{s:04d}/{name}": tensor for s, state in enumerate(target.trajectory)
                                  for name, tensor in job.saved(state).items()}, {})
    files = []
    for role, (tensors, facts) in outputs.items():
        path = directory / f"{role}.safetensors"
        save_tensors(path, tensors, {**common, **{k: str(v) for k, v in facts.items()}})
        files.append(file_entry(out_dir, path, role, index, facts))
    write_json(directory / "metrics.json", _target_metrics(target))
    files.append(file_entry(out_dir, directory / "metrics.json", "metrics", index))
    return files


def _target_summary(target: TargetResult) -> dict[str, Any]:
    last = target.steps[-1] if target.steps else {}
    best = target.steps[target.best_step - 1] if target.steps else {}
    summary = {"last_accuracy": last.get("accuracy"), "best_accuracy": best.get("accuracy"),
               "best_step": target.best_step, "last_loss": last.get("loss")}
    if target.average is not None:
        summary |= {"average_accuracy": target.average_metrics.get("accuracy"),
                    "average_loss": target.average_metrics.get("loss")}
    return summary


