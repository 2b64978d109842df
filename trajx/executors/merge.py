"""The `merge` executor: N models in; aligned, merged (and souped) models and a report out.

Writes, under `out_dir`:

    merged.safetensors          Σᵢ wᵢ πᵢθᵢ (REPAIRed if asked), BatchNorm re-estimated
    soup.safetensors            the greedy soup (if soup), BatchNorm re-estimated
    permutations.safetensors    `model-{i}/{group}`: model i's permutation into the common frame
                                (unless align is none)
    aligned/model-{i}.safetensors  every input in the common frame (if outputs.aligned)
    report.json                 spec, alignment (objectives, sweeps, MergeMany rounds), weights,
                                every input's and the merge's metrics, the barrier between each
                                input and the merge, the soup's choices; which split chose and
                                which scored
"""

import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from torch import nn

from trajx.engine.batches import Dataset
from trajx.engine.bn import batch_norm_layers
from trajx.engine.matching.solvers import get_solver
from trajx.engine.merging.alignment import PathEvaluator, matched_parameters
from trajx.engine.merging.averaging import score_of
from trajx.engine.merging.merge import (
    Alignment,
    align_to_reference,
    greedy_soup,
    hidden_layers,
    merge_many,
    normalised,
    repair,
    weighted_merge,
)
from trajx.engine.permutation.spec import PermutationSpec
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import resolve_device
from trajx.errors import InvalidInput
from trajx.executors.common import draw_batches, tensor_metadata, versions, write_json
from trajx.executors.inputs import open_inputs
from trajx.executors.manifest import ResultManifest, file_entry
from trajx.executors.registry import Checkpoint, Resolve, RunContext, RunProgress
from trajx.io import save_tensors
from trajx.job_spec import MergeJob
from trajx.resources import peak_memory_bytes, reset_peak_memory


def run_merge(spec: MergeJob, resolve: Resolve, out_dir: Path, ctx: RunContext) -> ResultManifest:
    """Merge `spec.models`, write the results under `out_dir`, return their manifest.

    Summary: `{"align", "device", "seconds", "peak_memory_bytes", "bn_samples", "scored_on",
    "merged": metrics, "inputs": [metrics], "mean_input_accuracy", "merged_accuracy",
    "soup_accuracy", "barriers": [{loss_barrier, accuracy_barrier}], "soup": {...} or None}`;
    every metric is on eval_data except the soup's `select_data` entries (docs/jobs.md). Raises
    InvalidInput before any work (checkpoints, data, REPAIR on a net with BatchNorm),
    UnsupportedModel (spec derivation), Cancelled between alignments and evaluations.
    """
    started = time.perf_counter()
    device = resolve_device(spec.params.device)
    job = open_inputs(spec.arch, resolve)
    model = job.model
    for index, ref in enumerate(spec.models):
        job.check_header(ref, f"models[{index}]")
    if spec.repair and batch_norm_layers(model):
        raise InvalidInput("repair: the model has BatchNorm layers, whose statistics are re-estimated for "
                           "every merge already; REPAIR is for nets without them", code="invalid_params",
                           field="repair")
    splits = {name: job.data(getattr(spec, name), name)
              for name in ("train_data", "eval_data", "select_data") if getattr(spec, name) is not None}
    states = [job.checkpoint(ref, f"models[{i}]") for i, ref in enumerate(spec.models)]
    perm_spec = None
    if spec.align != "none" or spec.repair:  # REPAIR finds the hidden layers through the spec
        model.load_state_dict(states[spec.reference])
        perm_spec = derive_spec(model, job.example, explicit=spec.permutation_spec)

    reset_peak_memory(device)
    model.to(device)
    states = [{n: t.to(device) for n, t in state.items()} for state in states]
    weights = normalised(spec.weights or [1.0] * len(states))
    count = len(states)
    total = 2 * count + (count if spec.soup else 0)
    # Units: the alignment (unless align is none), then each input's score and barrier.
    reached = list(ctx.resume)
    aligning = spec.align != "none"
    if aligning and reached:
        alignment = _decode_alignment(reached[0], perm_spec, count)
    else:
        alignment = _align(spec, perm_spec, model, states, weights, ctx)
        ctx.on_progress(RunProgress(count, total, {"stage": "aligned"}))
        if aligning:
            ctx.on_checkpoint(_encode_alignment(alignment))
    aligned = alignment.apply(perm_spec, states) if aligning else states

    evaluator = PathEvaluator(model, draw_batches(splits["train_data"], spec.params, spec.params.bn_batches,
                                                  device), splits["eval_data"], 4 * spec.params.batch_size,
                              device, ctx.should_cancel, job.task)
    merged = weighted_merge(aligned, weights, spec.layer_weights)
    repair_report = None
    if spec.repair:
        merged, repair_report = repair(model, merged, aligned, weights, hidden_layers(model, perm_spec),
                                       evaluator.bn_inputs, spec.layer_weights)
    merged = evaluator.finish(merged)  # on CPU, to be written
    merged_metrics = evaluator.score()
    on_device = {n: t.to(device) for n, t in merged.items()}
    inputs, barriers = [], []
    for index, state in enumerate(aligned):
        step = index + 1 + int(aligning)
        if step <= len(reached):
            inputs.append(reached[step - 1].data["input"])
            barriers.append(reached[step - 1].data["barrier"])
            continue
        evaluator.finish(state)
        inputs.append(evaluator.score())
        curve = evaluator.curve(state, on_device, spec.params.alphas)
        barriers.append({key: value for key, value in curve.to_json().items() if key != "points"}
                        | {"points": curve.points})
        ctx.on_progress(RunProgress(count + index + 1, total, {"stage": "barrier", "model": index}))
        ctx.on_checkpoint(Checkpoint(step, b"", {"unit": f"barrier of models[{index}]", "input": inputs[-1],
                                                 "barrier": barriers[-1]}))
    soup = _soup(spec, evaluator, aligned, splits, ctx, total) if spec.soup else None
    peak = peak_memory_bytes(device)
    seconds = time.perf_counter() - started

    common = tensor_metadata("merge", spec.arch, align=spec.align)
    outputs: dict[str, dict[str, torch.Tensor]] = {"merged": merged}
    if soup is not None:
        outputs["soup"] = soup.pop("state")
    if spec.align != "none":
        outputs["permutations"] = {f"model-{i}/{group}": perm[group]
                                   for i, perm in enumerate(alignment.perms) for group in perm}
    if spec.outputs.aligned:
        outputs |= {f"aligned/model-{i}": state for i, state in enumerate(aligned)}
    files = []
    for role, tensors in outputs.items():
        path = out_dir / f"{role}.safetensors"
        state = {n: t.cpu() for n, t in tensors.items()}
        save_tensors(path, state if role == "permutations" else job.saved(state), common)
        files.append(file_entry(out_dir, path, role.split("/")[0]))
    accuracies = [m.get("accuracy") for m in inputs]
    summary = {"align": spec.align, "device": str(device), "seconds": seconds, "peak_memory_bytes": peak,
               "bn_samples": evaluator.bn_samples, "scored_on": "eval_data", "merged": merged_metrics,
               "inputs": inputs,
               "mean_input_accuracy": sum(accuracies) / count if None not in accuracies else None,
               "merged_accuracy": merged_metrics.get("accuracy"),
               "soup_accuracy": soup["metrics"]["eval_data"].get("accuracy") if soup is not None else None,
               "barriers": [{k: v for k, v in b.items() if k != "points"} for b in barriers],
               "soup": soup}
    report = out_dir / "report.json"
    write_json(report, {"spec": spec.model_dump(mode="json"), "summary": summary, "weights": weights,
                        "alignment": _alignment_json(alignment, spec), "barriers": barriers,
                        "repair": repair_report,
                        "buffers": f"BatchNorm statistics re-estimated on {evaluator.bn_samples} samples of "
                                   "train_data for every model scored (inputs, merge, soups, every α)",
                        "versions": versions()})
    files.append(file_entry(out_dir, report, "report"))
    return ResultManifest(files, summary)


def _align(spec: MergeJob, perm_spec: PermutationSpec | None, model: nn.Module, states, weights,
           ctx: RunContext) -> Alignment:
    """The permutation of every model into the common frame (none when align is none)."""
    if spec.align == "none":
        return Alignment([{} for _ in states], [[] for _ in states])
    names = matched_parameters(model, perm_spec)
    matching = {"max_iter": spec.params.matching.max_iter, "tol": spec.params.matching.tol}
    solver = get_solver(spec.params.matching.solver)
    if spec.align == "reference":
        return align_to_reference(perm_spec, states, spec.reference, names, solver, seed=spec.params.seed,
                                  **matching)
    return merge_many(perm_spec, states, weights, names, spec.rounds, spec.params.seed, solver,
                      ctx.should_cancel, **matching)


def _encode_alignment(alignment: Alignment) -> Checkpoint:
    """The alignment as the worker records it: every permutation as safetensors, the rest as JSON."""
    perms = {f"model-{i}/{group}": perm[group] for i, perm in enumerate(alignment.perms) for group in perm}
    return Checkpoint(1, safetensors_bytes(perms), {"unit": "alignment", "objectives": alignment.objectives,
                                                    "rounds": alignment.rounds, "changed": alignment.changed})


def _decode_alignment(checkpoint: Checkpoint, perm_spec: PermutationSpec, count: int) -> Alignment:
    found = safetensors_load(checkpoint.state)
    perms = [{g.name: found[f"model-{i}/{g.name}"] for g in perm_spec.groups if f"model-{i}/{g.name}" in found}
             for i in range(count)]
    return Alignment(perms, checkpoint.data["objectives"], checkpoint.data["rounds"], checkpoint.data["changed"])


def _soup(spec: MergeJob, evaluator: PathEvaluator, states, splits: dict[str, Dataset], ctx: RunContext,
          total: int) -> dict[str, Any]:
    """The greedy soup, chosen on select_data and scored on eval_data, with the uniform soup
    and the best single model (by select_data) as its baselines on both splits."""
    select = splits["select_data"]
    seen: list[dict[str, float]] = []  # select_data metrics of every model, then of every soup tried

    def score(state) -> tuple[float, ...]:
        evaluator.finish(state)
        seen.append(evaluator.score(select))
        ctx.on_progress(RunProgress(min(2 * len(states) + len(seen), total), total, {"stage": "soup"}))
        return score_of(seen[-1])

    soup = greedy_soup(states, score, ctx.should_cancel)
    count = len(states)
    tried = [{"model": t["model"], "kept": t["kept"], "select_metrics": m} for t, m in zip(soup.tried, seen[count:])]
    soup_state = evaluator.finish(soup.state)
    both = {"select_data": evaluator.score(select), "eval_data": evaluator.score()}
    uniform = evaluator.finish(weighted_merge(states, [1.0] * len(states)))
    uniform_scores = {"select_data": evaluator.score(select), "eval_data": evaluator.score()}
    del uniform
    evaluator.finish(states[soup.ranking[0]])
    best_single = {"model": soup.ranking[0], "select_data": evaluator.score(select), "eval_data": evaluator.score()}
    return {"chosen_on": "select_data", "scored_on": "eval_data", "ingredients": soup.ingredients,
            "ranking": soup.ranking, "model_select_metrics": seen[:count], "tried": tried,
            "metrics": both, "uniform_soup": uniform_scores, "best_single": best_single, "state": soup_state}


def _alignment_json(alignment: Alignment, spec: MergeJob) -> dict[str, Any]:
    return {"align": spec.align, "reference": spec.reference if spec.align == "reference" else None,
            "rounds": alignment.rounds if spec.align == "mean" else None, "changed_per_round": alignment.changed,
            "models": [{"objective": o[-1] if o else None, "objective_before": o[0] if o else None,
                        "sweeps": len(o) - 1 if o else 0, "objectives": o} for o in alignment.objectives]}
