"""The `average` executor: a stored trajectory in, averaged checkpoint(s) and a report out.

Every checkpoint's header is checked against the architecture before any work (a list
mixing architectures fails with `checkpoint_mismatch` naming `checkpoints[i]`); the
checkpoints are then read one at a time while averaging. Writes, under `out_dir`:

    averaged.safetensors             the chosen average (the best on eval_data in a sweep)
    candidates/{label}.safetensors   every swept candidate (if outputs.candidates), e.g.
                                     candidates/uniform-last-5.safetensors
    report.json                      spec, each checkpoint's step and where it was read, every
                                     candidate's metrics, the last checkpoint's (BatchNorm
                                     re-estimated like every candidate), which split chose and
                                     which scored, timings, peak memory, versions
"""

import re
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from trajx.engine.merging.averaging import (
    Averager,
    Candidate,
    CandidateResult,
    Finished,
    build_order,
    ema,
    lawa,
    uniform,
)
from trajx.engine.transfer.gmt import resolve_device
from trajx.errors import Cancelled, InvalidInput
from trajx.executors.common import draw_batches, tensor_metadata, versions, write_json
from trajx.executors.inputs import open_inputs
from trajx.executors.manifest import ResultFile, ResultManifest, file_entry
from trajx.executors.registry import (
    RECORD_TENSORS_MAX_BYTES,
    Checkpoint,
    Resolve,
    RunContext,
    RunProgress,
)
from trajx.executors.steps import checkpoint_steps
from trajx.job_spec import AverageJob, EmaMethod, LawaMethod
from trajx.resources import peak_memory_bytes, reset_peak_memory

BUFFERS_NOTE = ("parameters are averaged in float32; BatchNorm running statistics are re-estimated "
                "on {samples} samples of train_data for every model scored (the last checkpoint too); "
                "every other buffer comes from the newest checkpoint of the window")


def plan_candidates(spec: AverageJob, steps: list[int] | None = None) -> list[Candidate]:
    """The averages to build: the method's one, or one per value of the sweep's grid.
    `steps`: each checkpoint's optimizer step (default: positions)."""
    count, method = len(spec.checkpoints), spec.method
    try:
        if isinstance(method, EmaMethod):
            decays = spec.sweep.decay if spec.sweep is not None else [method.decay]
            return [ema(count, beta, method.warmup, method.bias_correction, steps) for beta in decays]
        if isinstance(method, LawaMethod):
            lasts = spec.sweep.last if spec.sweep is not None else [method.last]
            return [lawa(count, last, method.every, steps) for last in lasts]
        lasts = spec.sweep.last if spec.sweep is not None else [method.window(count)]
        return [uniform(count, last, steps) for last in lasts]
    except ValueError as exc:  # the spec model checks these first; the engine has the last word
        raise InvalidInput(f"method: {exc}", code="invalid_params", field="method") from None


def run_average(spec: AverageJob, resolve: Resolve, out_dir: Path, ctx: RunContext) -> ResultManifest:
    """Average `spec.checkpoints`, write the result files under `out_dir`, return their manifest.

    Summary: `{"method", "device", "seconds", "peak_memory_bytes", "candidates", "steps_from",
    "bn_samples", "chosen_on", "scored_on", "best_accuracy", "last_checkpoint_accuracy",
    "best": {label, params, checkpoints, newest, newest_step, metrics, select_metrics},
    "last_checkpoint": metrics}` (metrics empty, accuracies None without eval data;
    chosen_on None without a sweep; select_metrics only with select_data).
    Raises InvalidInput before any averaging when a checkpoint or data shard is unusable,
    NonFiniteLoss, Cancelled between candidates.
    """
    started = time.perf_counter()
    device = resolve_device(spec.params.device)
    job = open_inputs(spec.arch, resolve)
    for index, ref in enumerate(spec.checkpoints):
        job.check_header(ref, f"checkpoints[{index}]")
    train = job.data(spec.train_data, "train_data")
    eval_data = None if spec.eval_data is None else job.data(spec.eval_data, "eval_data")
    select_data = None if spec.select_data is None else job.data(spec.select_data, "select_data")
    steps, steps_from = checkpoint_steps(spec.checkpoints, resolve, spec.steps)
    candidates = plan_candidates(spec, steps)

    def load(index: int) -> dict[str, torch.Tensor]:
        # A window may hold up to 1000 checkpoints: a cancel need not wait for its end.
        if ctx.should_cancel():
            raise Cancelled(f"averaging cancelled before reading checkpoints[{index}]")
        return job.checkpoint(spec.checkpoints[index], f"checkpoints[{index}]")

    reset_peak_memory(device)
    averager = Averager(job.model, load, draw_batches(train, spec.params, spec.params.bn_batches, device),
                        eval_data, 4 * spec.params.batch_size, device, select_data=select_data, task=job.task)
    common = tensor_metadata("average", spec.arch)
    files: list[ResultFile] = []
    order = build_order(candidates)
    finished = [_decode_candidate(checkpoint, candidates[order[rank]]) for rank, checkpoint in enumerate(ctx.resume)]
    done = len(finished)

    def describe(result: CandidateResult) -> dict[str, Any]:
        return _describe(result, steps)

    def write_candidate(result: CandidateResult, state: dict[str, torch.Tensor]) -> None:
        path = out_dir / "candidates" / f"{_slug(result.candidate.label)}.safetensors"
        job.save(path, state, {**common, "label": result.candidate.label})
        files.append(file_entry(out_dir, path, "candidate", metadata=describe(result)))

    def on_candidate(result: CandidateResult, state: dict[str, torch.Tensor]) -> None:
        nonlocal done
        done += 1
        if spec.outputs.candidates:
            write_candidate(result, state)
        ctx.on_progress(RunProgress(done, len(candidates), describe(result)))
        ctx.on_checkpoint(_encode_candidate(done, result, state))

    result = averager.run(candidates, on_candidate, ctx.should_cancel, finished,
                          on_restored=write_candidate if spec.outputs.candidates else None)
    # The baseline gets the candidates' treatment: BatchNorm re-estimated on the same batches.
    last_checkpoint = averager.score(averager.finish(load(len(spec.checkpoints) - 1)))
    peak = peak_memory_bytes(device)
    seconds = time.perf_counter() - started

    averaged = out_dir / "averaged.safetensors"
    job.save(averaged, result.state, {**common, "label": result.best.candidate.label})
    files.insert(0, file_entry(out_dir, averaged, "averaged", metadata=describe(result.best)))
    chosen_on = None if len(candidates) == 1 else "select_data" if select_data is not None else "eval_data"
    summary = {"method": spec.method.name, "device": str(device), "seconds": seconds,
               "peak_memory_bytes": peak, "candidates": len(candidates), "steps_from": steps_from,
               "bn_samples": averager.bn_samples, "chosen_on": chosen_on,
               "scored_on": "eval_data" if eval_data is not None else None,
               "best_accuracy": result.best.metrics.get("accuracy"),
               "last_checkpoint_accuracy": last_checkpoint.get("accuracy"),
               "best": describe(result.best), "last_checkpoint": last_checkpoint}
    warnings = []
    if chosen_on == "eval_data":
        warnings.append("the sweep chose on eval_data, the split it is scored on: best_accuracy is optimistic; "
                        "give select_data to choose on another split")
    report = out_dir / "report.json"
    write_json(report, {"spec": spec.model_dump(mode="json"), "summary": summary, "warnings": warnings,
                        "steps": steps, "candidates": [describe(r) for r in result.curve],
                        "buffers": BUFFERS_NOTE.format(samples=averager.bn_samples), "versions": versions()})
    files.append(file_entry(out_dir, report, "report"))
    return ResultManifest(files, summary)


def _encode_candidate(step: int, result: CandidateResult, state: dict[str, torch.Tensor]) -> Checkpoint:
    """Candidate `step` (of the build order) as the worker records it: its metrics, and its
    state while that is at most RECORD_TENSORS_MAX_BYTES (a resume rebuilds a larger one
    where it is needed: the best, or every candidate with outputs.candidates)."""
    size = sum(t.numel() * t.element_size() for t in state.values())
    kept = safetensors_bytes(state) if size <= RECORD_TENSORS_MAX_BYTES else b""
    return Checkpoint(step, kept, {"unit": f"candidate {result.candidate.label}", "metrics": result.metrics,
                                   "select_metrics": result.select_metrics})


def _decode_candidate(checkpoint: Checkpoint, candidate: Candidate) -> Finished:
    result = CandidateResult(candidate, checkpoint.data["metrics"], checkpoint.data["select_metrics"])
    return Finished(result, safetensors_load(checkpoint.state) if checkpoint.state else None)


def _describe(result: CandidateResult, steps: list[int]) -> dict[str, Any]:
    candidate = result.candidate
    described = {"label": candidate.label, "params": candidate.params, "checkpoints": len(candidate.indices),
                 "newest": candidate.newest, "newest_step": steps[candidate.newest], "metrics": result.metrics}
    if result.select_metrics is not None:
        described["select_metrics"] = result.select_metrics
    return described


def _slug(label: str) -> str:
    """A file name for a candidate label: "ema decay=0.9 warmup" -> "ema-decay-0.9-warmup"."""
    return re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-")
