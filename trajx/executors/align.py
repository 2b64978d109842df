"""The `align` executor: models A and B in; B permuted onto A, its permutations and the
barrier report out.

Writes, under `out_dir`:

    aligned_b.safetensors      B with every permutation group reordered onto A (same function as B)
    permutations.safetensors   one int64 tensor per group: perm[g][i] = the B unit now at i
    merged.safetensors         ½(A + πB) on every floating tensor, BatchNorm re-estimated
                               (if outputs.merged)
    report.json                spec, permutation spec, the matching objective before and after
                               each sweep, plain and aligned interpolation curves (loss, accuracy
                               at each α of params.alphas, BN re-estimated at each), their
                               barriers, the split they were measured on, timings, versions
"""

import time
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from trajx.engine.batches import Dataset
from trajx.engine.matching.solvers import get_solver
from trajx.engine.merging.alignment import (
    Curve,
    PathEvaluator,
    Tensors,
    activation_matching,
    find_probes,
    matched_parameters,
    weight_matching,
)
from trajx.engine.permutation.spec import Permutation, PermutationSpec, apply_permutation
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import resolve_device
from trajx.executors.common import draw_batches, tensor_metadata, versions, write_json
from trajx.executors.inputs import open_inputs
from trajx.executors.manifest import ResultManifest, file_entry
from trajx.executors.registry import Checkpoint, Resolve, RunContext, RunProgress
from trajx.io import save_tensors
from trajx.job_spec import AlignJob
from trajx.resources import peak_memory_bytes, reset_peak_memory

# A second, independent batch stream for activation matching (the first re-estimates BN).
_ACTIVATION_STREAM = 1


def run_align(spec: AlignJob, resolve: Resolve, out_dir: Path, ctx: RunContext) -> ResultManifest:
    """Align `spec.model_b` onto `spec.model_a`, write the results, return their manifest.

    Summary: `{"method", "device", "seconds", "matching_seconds", "peak_memory_bytes",
    "matching_objective", "matching_sweeps", "bn_samples", "scored_on",
    "plain_loss_barrier", "aligned_loss_barrier", "plain_accuracy_barrier",
    "aligned_accuracy_barrier", "merged_accuracy"}` (accuracy entries only for class
    targets; merged_accuracy None unless outputs.merged; the matching entries None for
    activation matching). The barrier curves are measured on eval_data (train_data
    without it: `scored_on` says which). Raises InvalidInput (checkpoints,
    data), UnsupportedModel (spec derivation; `activations_unobservable`), Cancelled
    between interpolation points.
    """
    started = time.perf_counter()
    device = resolve_device(spec.params.device)
    job = open_inputs(spec.arch, resolve)
    model = job.model
    state_a = job.checkpoint(spec.model_a, "model_a")
    state_b = job.checkpoint(spec.model_b, "model_b")
    train = job.data(spec.train_data, "train_data")
    eval_data = train if spec.eval_data is None else job.data(spec.eval_data, "eval_data")
    model.load_state_dict(state_a)
    perm_spec = derive_spec(model, job.example, explicit=spec.permutation_spec)

    reset_peak_memory(device)
    model.to(device)
    state_a = {n: t.to(device) for n, t in state_a.items()}
    state_b = {n: t.to(device) for n, t in state_b.items()}
    reached = list(ctx.resume)  # units: 1 matching, 2 the plain curve, 3 the aligned curve
    if reached:
        matched = safetensors_load(reached[0].state)
        perm = {group.name: matched[group.name] for group in perm_spec.groups}
        objectives, matching_seconds = reached[0].data["objectives"], reached[0].data["matching_seconds"]
    else:
        perm, objectives, matching_seconds = _match(spec, model, perm_spec, state_a, state_b, train, device)
        ctx.on_checkpoint(Checkpoint(1, safetensors_bytes(perm), {"unit": "matching", "objectives": objectives,
                                                                  "matching_seconds": matching_seconds}))
    aligned_b = apply_permutation(perm_spec, perm, state_b)

    evaluator = PathEvaluator(model, draw_batches(train, spec.params, spec.params.bn_batches, device),
                              eval_data, 4 * spec.params.batch_size, device, ctx.should_cancel, job.task)
    alphas = spec.params.alphas
    total = 2 * len(alphas)
    curves = {}
    for step, (path, b) in enumerate((("plain", state_b), ("aligned", aligned_b)), start=2):
        if len(reached) >= step:
            curves[path] = Curve(reached[step - 1].data["points"])
            continue
        curves[path] = evaluator.curve(state_a, b, alphas)
        ctx.on_progress(RunProgress((step - 1) * len(alphas), total,
                                    {"path": path, "loss_barrier": curves[path].barrier("loss")}))
        ctx.on_checkpoint(Checkpoint(step, b"", {"unit": f"{path} curve", "points": curves[path].points}))
    merged = evaluator.point(state_a, aligned_b, 0.5) if spec.outputs.merged else None
    merged_metrics = evaluator.score() if merged is not None else {}
    peak = peak_memory_bytes(device)
    seconds = time.perf_counter() - started

    common = tensor_metadata("align", spec.arch, method=spec.method)
    files = []
    for role, tensors in (("aligned_b", aligned_b), ("permutations", perm), ("merged", merged)):
        if tensors is not None:
            path = out_dir / f"{role}.safetensors"
            # Models under their checkpoint names; permutations are keyed by group.
            save_tensors(path, tensors if role == "permutations" else job.saved(tensors), common)
            files.append(file_entry(out_dir, path, role))
    barriers = {f"{path}_{key}": value for path, curve in curves.items()
                for key, value in curve.to_json().items() if key != "points"}
    summary = {"method": spec.method, "device": str(device), "seconds": seconds,
               "matching_seconds": matching_seconds, "peak_memory_bytes": peak,
               "matching_objective": objectives[-1] if objectives else None,
               "matching_sweeps": len(objectives) - 1 if objectives else None,
               "bn_samples": evaluator.bn_samples, "scored_on": "eval_data" if spec.eval_data else "train_data",
               **barriers, "merged_accuracy": merged_metrics.get("accuracy")}
    report = out_dir / "report.json"
    write_json(report, {"spec": spec.model_dump(mode="json"), "permutation_spec": perm_spec.to_json(),
                        "summary": summary, "matching": {"objectives": objectives},
                        "curves": {p: c.to_json() for p, c in curves.items()}, "merged": merged_metrics or None,
                        "buffers": f"every floating tensor interpolated; BatchNorm statistics re-estimated on "
                                   f"{evaluator.bn_samples} samples of train_data at every point; integer "
                                   "buffers from model_a",
                        "versions": versions()})
    files.append(file_entry(out_dir, report, "report"))
    return ResultManifest(files, summary)


def _match(spec: AlignJob, model: torch.nn.Module, perm_spec: PermutationSpec, state_a: Tensors,
           state_b: Tensors, train: Dataset, device: torch.device) -> tuple[Permutation, list[float] | None, float]:
    """(π aligning B onto A, the weight-matching objectives (None for activations), seconds taken)."""
    started = time.perf_counter()
    solver = get_solver(spec.params.matching.solver)
    if spec.method == "weights":
        matching = spec.params.matching
        names = matched_parameters(model, perm_spec)
        result = weight_matching(perm_spec, state_a, state_b, names, max_iter=matching.max_iter,
                                 tol=matching.tol, seed=spec.params.seed, solver=solver)
        return result.perm, result.objectives, time.perf_counter() - started
    batches = draw_batches(train, spec.params, spec.params.activation_batches, device, offset=_ACTIVATION_STREAM)
    model.load_state_dict(state_a)
    probes = find_probes(model, perm_spec, batches[0], torch.Generator().manual_seed(spec.params.seed))
    perm = activation_matching(model, perm_spec, state_a, state_b, batches, probes, solver)
    return perm, None, time.perf_counter() - started
