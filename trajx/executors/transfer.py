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
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from trajx.engine.batches import Dataset
from trajx.engine.matching.solvers import get_solver
from trajx.engine.options import MatchingOptions, TransferOptions
from trajx.engine.permutation.spec import PermutationSpec
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import (
    StepState,
    TargetResult,
    TransferResult,
    resolve_device,
    transfer,
)
from trajx.engine.transfer.methods import STRATEGIES, Method
from trajx.engine.transfer.schedule import plan_trajectory
from trajx.errors import InvalidInput
from trajx.executors.common import tensor_metadata, versions, write_json
from trajx.executors.inputs import JobInputs, open_inputs
from trajx.executors.manifest import ResultFile, ResultManifest, file_entry
from trajx.executors.registry import (
    RECORD_TENSORS_MAX_BYTES,
    Checkpoint,
    Resolve,
    RunContext,
    RunProgress,
)
from trajx.io import initializer_seed, save_tensors
from trajx.job_spec import PairWeighting, Target, TransferJob, TransferParams
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
    `{"method", "pair_weighting" (the one used: `pair_weighting`), "device", "seconds",
    "targets": [{last_accuracy, best_accuracy, best_step, last_loss}]}` (accuracies/loss
    are None without eval data). Raises
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
    weighting = pair_weighting(spec.params.pair_weighting, [_pretrained(t, resolve) for t in spec.targets])
    perm_spec = derive_spec(model, inputs.job.example, explicit=spec.permutation_spec)
    try:
        plan = plan_trajectory(spec.params.schedule, spec.params.steps, len(spec.source))
    except ValueError as exc:
        raise InvalidInput(f"params.steps: {exc}", code="invalid_params", field="params.steps") from None

    reached = [_decode_step(checkpoint) for checkpoint in ctx.resume]
    done, total = len(reached) * len(spec.targets), len(spec.targets) * spec.params.steps

    def progress(step: int, steps: int, target: int, metrics: dict[str, float]) -> None:
        # Targets may interleave: the job's count reaches `total` exactly with the last result.
        nonlocal done
        done += 1
        ctx.on_progress(RunProgress(done, total, {"target": target, "target_step": step, "metrics": metrics}))

    def completed(state: StepState) -> None:
        reached.append(state)
        ctx.on_checkpoint(_encode_step(state))

    reset_peak_memory(device)

    def run(**how: Any) -> TransferResult:
        return transfer(model, perm_spec, inputs.source, inputs.targets, inputs.train,
                        engine_options(spec.params, device, weighting), method=inputs.method,
                        solver=get_solver(spec.params.matching.solver),
                        eval_data=inputs.eval, keep_trajectory=spec.outputs.trajectory, task=inputs.job.task,
                        average_last=spec.outputs.average.last if spec.outputs.average else None, plan=plan,
                        **how)

    try:
        result = run(resume=list(reached), on_step=completed, on_progress=progress, should_cancel=ctx.should_cancel,
                     step_pairs=keeps_pairs(spec, model, perm_spec))
    except Exception:
        if spec.outputs.partial_on_stop and reached:
            steps = list(reached)
            ctx.on_partial(lambda: _write_result(out_dir, spec, inputs.job, perm_spec, weighting,
                                                 run(resume=steps, until=len(steps)), started, partial=True))
        raise
    return _write_result(out_dir, spec, inputs.job, perm_spec, weighting, result, started)


def pair_weighting(setting: str, pretrained: list[bool]) -> PairWeighting:
    """`params.pair_weighting` with "auto" resolved by the job's scenario (docs/pretrained.md):
    "unit" when every target is a pre-trained backbone (`pretrained`, one per target), where
    it closed most of the gap to the Oracle; otherwise "none", the published algorithm,
    which the random-init benchmarks favour. An explicit "none" or "unit" stands."""
    if setting != "auto":
        return setting
    return "unit" if all(pretrained) else "none"


def _pretrained(target: Target, resolve: Resolve) -> bool:
    """Whether `target` is a pre-trained backbone: a checkpoint no initializer drew (a `seed`
    target, or a file `trajx init` or `trajx export` marked with its seed, is a random init)."""
    return target.checkpoint is not None and initializer_seed(resolve(target.checkpoint)) is None


def _write_result(out_dir: Path, spec: TransferJob, job: JobInputs, perm_spec: PermutationSpec,
                  weighting: PairWeighting, result: TransferResult, started: float,
                  partial: bool = False) -> ResultManifest:
    """Every result file of `result` under `out_dir` and their manifest; `partial` marks the
    results of a run that stopped before its last step. The summary names the pair weighting
    the run used (`weighting`: "auto" resolved)."""
    seconds = time.perf_counter() - started

    files = [entry for index, target in enumerate(result.targets)
             for entry in _write_target(out_dir, index, target, spec, job, partial)]
    summary = {
        "method": spec.method,
        "pair_weighting": weighting,
        "device": result.device,
        "seconds": seconds,
        "targets": [_target_summary(t) for t in result.targets],
        **({"partial": True, "reached_step": len(result.targets[0].steps)} if partial else {}),
    }
    report = {
        "spec": spec.model_dump(mode="json"),
        "permutation_spec": perm_spec.to_json(),
        "permutation_groups": [{"name": g.name, "label": perm_spec.labels.get(g.name), "size": g.size}
                               for g in perm_spec.groups],
        "summary": summary,
        "targets": [_target_metrics(t) for t in result.targets],
        "timings": {"total_seconds": seconds, **asdict(result.timings),
                    "peak_memory_bytes": peak_memory_bytes(torch.device(result.device))},
        "versions": versions(),
    }
    write_json(out_dir / "report.json", report)
    files.append(file_entry(out_dir, out_dir / "report.json", "report"))
    return ResultManifest(files, summary)


def keeps_pairs(spec: TransferJob, model: torch.nn.Module, perm_spec: PermutationSpec) -> bool:
    """Whether each step's record carries its gradient pair (docs/reliability.md, "the resume
    rule"): only while a step's pair is at most RECORD_TENSORS_MAX_BYTES, where writing it costs
    less than recomputing it after an interruption; above that the record stays the size of
    the permutations and a resume recomputes the pairs."""
    matched = sum(p.numel() for n, p in model.named_parameters()
                  if any(g is not None for g in perm_spec.param_groups.get(n, ())))
    width = torch.empty((), dtype=getattr(torch, spec.params.pair_dtype)).element_size()
    return (len(spec.targets) + 1) * matched * width <= RECORD_TENSORS_MAX_BYTES


def _encode_step(state: StepState) -> Checkpoint:
    """A step's state as the worker stores it: permutations (and pairs) as safetensors, metrics as JSON."""
    tensors = {f"perm/{k}/{group}": perm for k, perm in enumerate(state.perms) for group, perm in perm.items()}
    for i, pair in enumerate(state.pairs or ()):
        tensors |= {f"pair/{i}/{name}": tensor for name, tensor in pair.items()}
    return Checkpoint(state.step, safetensors_bytes(tensors), {"unit": f"step {state.step}", "metrics": state.metrics})


def _decode_step(checkpoint: Checkpoint) -> StepState:
    count = len(checkpoint.data["metrics"])
    perms: list[dict[str, torch.Tensor]] = [{} for _ in range(count)]
    pairs: list[dict[str, torch.Tensor]] = [{} for _ in range(count + 1)]
    for key, tensor in safetensors_load(checkpoint.state).items():
        part, index, name = key.split("/", 2)
        (perms if part == "perm" else pairs)[int(index)][name] = tensor
    return StepState(checkpoint.step, perms, checkpoint.data["metrics"], pairs if any(pairs) else None)


def engine_options(params: TransferParams, device: torch.device, weighting: PairWeighting) -> TransferOptions:
    """The spec's `params` as the engine's options, on `device` and with the pair `weighting`
    as resolved once for the job (the solver is chosen separately)."""
    matching = MatchingOptions(max_iter=params.matching.max_iter, tol=params.matching.tol,
                               step_sweeps=params.matching.step_sweeps)
    return TransferOptions(**params.model_dump(exclude={"matching", "device", "pair_weighting"}),
                           matching=matching, device=device.type, pair_weighting=weighting)


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
                  job: JobInputs, partial: bool) -> list[ResultFile]:
    """Target `index`'s files under `target-{index}/`, with their manifest entries; tensors
    under their checkpoint names; each marked `partial` (file metadata and manifest) if so."""
    directory = out_dir / f"target-{index}"
    common = tensor_metadata("transfer", spec.arch, method=spec.method, **({"partial": "true"} if partial else {}))
    marked = {"partial": True} if partial else {}
    outputs = {"last": (job.saved(target.last), {"step": len(target.steps), **marked}),  # role -> (tensors, facts)
               "best": (job.saved(target.best), {"step": target.best_step, **marked})}
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


