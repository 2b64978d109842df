"""Execute a job spec on this machine: files in, engine, files out (docs/architecture.md).

`execute` validates every input before any expensive work (architecture and config,
each checkpoint against the architecture, the data against the model, the spec
derivation and the step plan), then runs the transfer and writes, under `out_dir`:

    target-{i}/last.safetensors  best.safetensors  [permutations.safetensors]
    target-{i}/[trajectory.safetensors]  metrics.json (best step, per-step metrics and seconds)
    report.json (spec, permutation spec, summary, every target's steps, run timings, versions)

The worker and `trajx run` both call it; it knows nothing about HTTP or the database.
"""

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from trajx import __version__
from trajx.engine.batches import Dataset
from trajx.engine.schedule import plan_trajectory
from trajx.engine.tasks import Task
from trajx.engine.trace import derive_spec
from trajx.engine.transfer import TargetResult, resolve_device, transfer
from trajx.engine.zoo import build_model, checkpoint_names, example_input, init_state_dict, task_for
from trajx.errors import InvalidInput
from trajx.io import load_checkpoint, load_data, save_tensors, validate_data
from trajx.resources import peak_memory_bytes, reset_peak_memory
from trajx.spec import TransferJob

Resolve = Callable[[str], Path]


@dataclass(frozen=True)
class RunProgress:
    """Step `step` of `total` done for target `target`, with that step's metrics."""

    step: int
    total: int
    target: int
    metrics: dict[str, float]


@dataclass
class _Inputs:
    model: torch.nn.Module
    task: Task
    names: dict[str, str]  # state-dict name -> name in checkpoint files
    example: torch.Tensor  # an input batch of the architecture, for tracing
    source: list[dict[str, torch.Tensor]]
    targets: list[dict[str, torch.Tensor]]
    trained: list[dict[str, torch.Tensor]] | None
    train: Dataset
    eval: Dataset | None


def execute(spec: TransferJob, resolve: Resolve, out_dir: Path,
            on_progress: Callable[[RunProgress], None] | None = None,
            should_cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run `spec`, write its result files under `out_dir`, return the summary.

    `resolve` maps each artifact ref of the spec to a local safetensors file. Returns
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
    perm_spec = derive_spec(inputs.model, inputs.example, explicit=spec.permutation_spec)
    try:
        plan_trajectory(spec.params.schedule, spec.params.steps, len(spec.source))
    except ValueError as exc:
        raise InvalidInput(f"params.steps: {exc}", code="invalid_params", field="params.steps") from None

    def progress(step: int, total: int, target: int, metrics: dict[str, float]) -> None:
        if on_progress is not None:
            on_progress(RunProgress(step, total, target, metrics))

    reset_peak_memory(device)
    result = transfer(inputs.model, perm_spec, inputs.source, inputs.targets, inputs.train,
                      spec.params, method=spec.method, eval_data=inputs.eval,
                      trained_targets=inputs.trained, keep_trajectory=spec.outputs.trajectory,
                      task=inputs.task, on_progress=progress, should_cancel=should_cancel)
    seconds = time.perf_counter() - started

    for index, target in enumerate(result.targets):
        _write_target(out_dir / f"target-{index}", target, spec, inputs.names)
        _write_json(out_dir / f"target-{index}" / "metrics.json", _target_metrics(target))
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
        "versions": _versions(),
    }
    _write_json(out_dir / "report.json", report)
    return summary


def _target_metrics(target: TargetResult) -> dict[str, Any]:
    return {"best_step": target.best_step, "steps": target.steps}


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2))


def _load_inputs(spec: TransferJob, resolve: Resolve) -> _Inputs:
    """Every input, validated, before anything expensive runs."""
    model = build_model(spec.arch.name, spec.arch.config)
    names = checkpoint_names(spec.arch.name, model)
    expected = {names[n]: t for n, t in model.state_dict().items()}
    module_names = {saved: name for name, saved in names.items()}

    def load(ref: str, what: str) -> dict[str, torch.Tensor]:
        return _renamed(load_checkpoint(resolve(ref), expected, what), module_names)

    source = [load(ref, f"source[{i}]") for i, ref in enumerate(spec.source)]
    targets = []
    for i, target in enumerate(spec.targets):
        if target.checkpoint is not None:
            targets.append(load(target.checkpoint, f"targets[{i}].checkpoint"))
        else:
            targets.append(init_state_dict(spec.arch.name, spec.arch.config, target.seed))
    trained = None
    if spec.method == "oracle":
        trained = [load(t.trained, f"targets[{i}].trained") for i, t in enumerate(spec.targets)]
    model.load_state_dict(source[0])
    task = task_for(spec.arch.name, spec.arch.config)
    example = example_input(spec.arch.name, spec.arch.config, batch=2)
    train = load_data(resolve(spec.train_data), "train_data")
    validate_data(train, model, "train_data", example.shape[1:], task)
    eval_data = None
    if spec.eval_data is not None:
        eval_data = load_data(resolve(spec.eval_data), "eval_data")
        validate_data(eval_data, model, "eval_data", example.shape[1:], task)
    return _Inputs(model, task, names, example, source, targets, trained, train, eval_data)


def _renamed(state: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    return {names[name]: tensor for name, tensor in state.items()}


def _write_target(directory: Path, target: TargetResult, spec: TransferJob, names: dict[str, str]) -> None:
    """The target's files, tensors under their checkpoint names."""
    common = {"trajx_version": __version__, "method": spec.method,
              "arch": json.dumps(spec.arch.model_dump(mode="json"))}
    save_tensors(directory / "last.safetensors", _renamed(target.last, names),
                 {**common, "step": str(len(target.steps))})
    save_tensors(directory / "best.safetensors", _renamed(target.best, names),
                 {**common, "step": str(target.best_step)})
    if spec.outputs.permutations:
        save_tensors(directory / "permutations.safetensors", target.permutation, common)
    if target.trajectory is not None:
        save_tensors(directory / "trajectory.safetensors",
                     {f"step{s:04d}/{names[name]}": tensor for s, state in enumerate(target.trajectory)
                      for name, tensor in state.items()}, common)


def _target_summary(target: TargetResult) -> dict[str, Any]:
    last = target.steps[-1] if target.steps else {}
    best = target.steps[target.best_step - 1] if target.steps else {}
    return {"last_accuracy": last.get("accuracy"), "best_accuracy": best.get("accuracy"),
            "best_step": target.best_step, "last_loss": last.get("loss")}


def _versions() -> dict[str, str]:
    versions = {"trajx": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for package in ("numpy", "scipy", "safetensors", "lapx", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
