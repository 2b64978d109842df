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

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trajx.engine.batches import Dataset
from trajx.engine.losses import Task
from trajx.engine.matching.solvers import get_solver
from trajx.engine.options import MatchingOptions, TransferOptions
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import TargetResult, resolve_device, transfer
from trajx.engine.transfer.methods import FGMT, GMT, Method, Naive, Oracle
from trajx.engine.transfer.schedule import plan_trajectory
from trajx.errors import InvalidInput
from trajx.executors.architecture import open_architecture
from trajx.executors.common import versions
from trajx.executors.manifest import ResultFile, ResultManifest, file_entry
from trajx.executors.registry import Resolve, RunContext, RunProgress
from trajx.io import load_checkpoint, load_data, save_tensors, validate_data
from trajx.job_spec import TransferJob, TransferParams
from trajx.resources import peak_memory_bytes, reset_peak_memory

# spec.method -> the engine's strategy (Oracle is built with the trained targets).
_METHODS: dict[str, type[Method]] = {"fgmt": FGMT, "gmt": GMT, "naive": Naive}
from trajx.version import __version__


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
    perm_spec = derive_spec(inputs.model, inputs.example, explicit=spec.permutation_spec)
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
    method = Oracle(inputs.trained) if spec.method == "oracle" else _METHODS[spec.method]()
    result = transfer(inputs.model, perm_spec, inputs.source, inputs.targets, inputs.train,
                      engine_options(spec.params), method=method, solver=get_solver(spec.params.matching.solver),
                      eval_data=inputs.eval, keep_trajectory=spec.outputs.trajectory, task=inputs.task,
                      on_progress=progress, should_cancel=ctx.should_cancel,
                      average_last=spec.outputs.average.last if spec.outputs.average else None)
    seconds = time.perf_counter() - started

    files = [entry for index, target in enumerate(result.targets)
             for entry in _write_target(out_dir, index, target, spec, inputs.names)]
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
    files.append(_write_json(out_dir, out_dir / "report.json", report, "report"))
    return ResultManifest(files, summary)


def engine_options(params: TransferParams) -> TransferOptions:
    """The spec's `params` as the engine's options (the solver is chosen separately)."""
    matching = MatchingOptions(max_iter=params.matching.max_iter, tol=params.matching.tol,
                               step_sweeps=params.matching.step_sweeps)
    return TransferOptions(**params.model_dump(exclude={"matching"}), matching=matching)


def _target_metrics(target: TargetResult) -> dict[str, Any]:
    metrics = {"best_step": target.best_step, "steps": target.steps}
    if target.average is not None:
        metrics["average"] = target.average_metrics
    return metrics


def _write_json(out_dir: Path, path: Path, document: dict[str, Any], role: str,
                target: int | None = None) -> ResultFile:
    path.write_text(json.dumps(document, indent=2))
    return file_entry(out_dir, path, role, target)


def _load_inputs(spec: TransferJob, resolve: Resolve) -> _Inputs:
    """Every input, validated, before anything expensive runs."""
    architecture = open_architecture(spec.arch, resolve)
    model = architecture.build()
    names = architecture.checkpoint_names(model)
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
            targets.append(architecture.init(target.seed, f"targets[{i}].seed"))
    trained = None
    if spec.method == "oracle":
        trained = [load(t.trained, f"targets[{i}].trained") for i, t in enumerate(spec.targets)]
    model.load_state_dict(source[0])
    example = architecture.example(2)
    train = load_data(resolve(spec.train_data), "train_data")
    validate_data(train, model, "train_data", example.shape[1:], architecture.task)
    eval_data = None
    if spec.eval_data is not None:
        eval_data = load_data(resolve(spec.eval_data), "eval_data")
        validate_data(eval_data, model, "eval_data", example.shape[1:], architecture.task)
    return _Inputs(model, architecture.task, names, example, source, targets, trained, train, eval_data)


def _renamed(state: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    return {names[name]: tensor for name, tensor in state.items()}


def _write_target(out_dir: Path, index: int, target: TargetResult, spec: TransferJob,
                  names: dict[str, str]) -> list[ResultFile]:
    """Target `index`'s files under `target-{index}/`, with their manifest entries; tensors
    under their checkpoint names."""
    directory = out_dir / f"target-{index}"
    common = {"trajx_version": __version__, "method": spec.method,
              "arch": json.dumps(spec.arch.model_dump(mode="json"))}
    outputs = {"last": (_renamed(target.last, names), {"step": len(target.steps)}),  # role -> (tensors, facts)
               "best": (_renamed(target.best, names), {"step": target.best_step})}
    if spec.outputs.permutations:
        outputs["permutations"] = (target.permutation, {})
    if target.average is not None:
        outputs["average"] = (_renamed(target.average, names), {"average_last": spec.outputs.average.last,
                                               **target.average_metrics})
    if target.trajectory is not None:
        outputs["trajectory"] = ({f"step{s:04d}/{names[name]}": tensor for s, state in enumerate(target.trajectory)
                                  for name, tensor in state.items()}, {})
    files = []
    for role, (tensors, facts) in outputs.items():
        path = directory / f"{role}.safetensors"
        save_tensors(path, tensors, {**common, **{k: str(v) for k, v in facts.items()}})
        files.append(file_entry(out_dir, path, role, index, facts))
    files.append(_write_json(out_dir, directory / "metrics.json", _target_metrics(target), "metrics", index))
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


