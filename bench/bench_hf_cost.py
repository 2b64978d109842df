"""Cost on real sizes: Hugging Face models built from their configs, random weights, on the CPU.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_hf_cost.py            # ≈10 min, ~6 GB of memory
    PYTHONPATH=$PWD .venv/bin/python bench/bench_hf_cost.py --skip-fgmt
    PYTHONPATH=$PWD .venv/bin/python bench/bench_hf_cost.py --skip-derivation   # the FGMT run only
    PYTHONPATH=$PWD .venv/bin/python bench/bench_hf_cost.py --skip-derivation --threads 2
    PYTHONPATH=$PWD .venv/bin/python bench/bench_hf_cost.py --skip-derivation --threads 2 --solve-threads 1
    PYTHONPATH=$PWD .venv/bin/python bench/bench_hf_cost.py --skip-derivation --threads 2 --layers 2   # a replay
    PYTHONPATH=$PWD .venv/bin/python bench/bench_hf_cost.py --skip-derivation --device cuda --steps 30

1. Spec derivation (torch.export, the rule table, the float64 self-check) for GPT-2-small,
   BERT-base, ViT-B/16 and ResNet-50: seconds and peak resident memory above the built
   model's, each in a fresh process.
2. One FGMT run on GPT-2-small (`--layers`: its first blocks only), T = 4, pairs kept on the
   CPU in bfloat16 (with `--device cuda`: on the GPU, as the cost products), G = 1, batches of 8
   windows of 64 tokens, on `--threads` torch threads (default 1; matching solves up to
   `--solve-threads`, default as many, independent groups at once): seconds per step
   (gradients, matching), peak memory, the pair bank against its formula (1 + K) · T · P · b
   (K targets, P matched parameters, b bytes per element; the source half is shared by the
   K targets), and a digest of the permutations found.
"""

import argparse
import hashlib
import multiprocessing
import time

import torch

from trajx.engine.batches import Dataset
from trajx.engine.options import MatchingOptions, TransferOptions
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import transfer
from trajx.engine.zoo import build_model, example_input, init_state_dict, task_for
from trajx.resources import current_memory_bytes, peak_memory_bytes, reset_peak_memory

MB = 2**20
CPU = torch.device("cpu")
# Each family's defaults are its base size (transformers' config defaults).
MODELS = {
    "GPT-2-small": {"task": "causal-lm", "model_type": "gpt2"},
    "BERT-base": {"task": "masked-lm", "model_type": "bert"},
    "ViT-B/16": {"task": "image-classification", "model_type": "vit", "num_labels": 1000},
    "ResNet-50": {"task": "image-classification", "model_type": "resnet", "num_labels": 1000},
}


def derivation(label: str) -> dict:
    """Build `label`, then derive and self-check its spec; seconds and peak extra MB."""
    torch.set_num_threads(1)
    arch = ("hf", MODELS[label])
    model = build_model(*arch)
    example = example_input(*arch)
    base = current_memory_bytes(CPU)
    reset_peak_memory(CPU)
    start = time.perf_counter()
    spec = derive_spec(model, example)
    seconds = time.perf_counter() - start
    return {"label": label, "params": sum(p.numel() for p in model.parameters()),
            "groups": len(spec.groups), "seconds": seconds,
            "peak_extra_mb": (peak_memory_bytes(CPU) - base) / MB, "model_mb": base / MB}


def fgmt_gpt2(steps: int, threads: int, solve_threads: int | None, layers: int = 12,
              device: str = "cpu") -> dict:
    """One FGMT run on GPT-2-small (or its first `layers` blocks): θᵀ = θ⁰ plus noise
    (training is not what is measured)."""
    torch.set_num_threads(threads)
    arch = ("hf", {**MODELS["GPT-2-small"], "n_layer": layers})
    model = build_model(*arch)
    spec = derive_spec(model, example_input(*arch))
    theta0 = init_state_dict(*arch, seed=0)
    generator = torch.Generator().manual_seed(0)
    theta_t = {n: t + 0.01 * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
               for n, t in theta0.items()}
    target = init_state_dict(*arch, seed=1)
    tokens = torch.randint(0, 50257, (64, 64), generator=generator)
    data = Dataset(tokens, tokens.clone())
    run_device = torch.device(device)
    # On a GPU the pairs stay there, so the cost products run there too.
    params = TransferOptions(steps=steps, batch_size=8, pair_device="cpu" if device == "cpu" else "auto",
                             pair_dtype="bfloat16", device=device,
                             matching=MatchingOptions(solve_threads=solve_threads))
    names = {n for n, _ in model.named_parameters() if any(g is not None for g in spec.param_groups.get(n, ()))}
    matched = sum(t.numel() for n, t in model.named_parameters() if n in names)
    base, device_base = current_memory_bytes(CPU), current_memory_bytes(run_device)
    reset_peak_memory(CPU)
    reset_peak_memory(run_device)
    start = time.perf_counter()
    result = transfer(model, spec, [theta0, theta_t], [target], data, params, task=task_for(*arch))
    seconds = time.perf_counter() - start
    steps_metrics = result.targets[0].steps
    digest = hashlib.sha256()
    for group, perm in sorted(result.targets[0].permutation.items()):
        digest.update(group.encode() + perm.numpy().tobytes())
    workers = solve_threads or threads
    sizes = sorted(g.size for g in spec.groups)
    return {"steps": steps, "seconds": seconds, "matched": matched,
            "formula_mb": peak_formula_bytes(steps, matched, 2, sizes, workers, targets=1) / MB, "perm_sha256": digest.hexdigest()[:16],
            "params": sum(p.numel() for p in model.parameters()),
            "gradient_s": [m["gradient_seconds"] + m["source_gradient_seconds"] for m in steps_metrics],
            "matching_s": [m["matching_seconds"] for m in steps_metrics],
            "bank_mb": 2 * steps * matched * 2 / MB,  # (1 + K) · T · P · b with K = 1, b = 2
            "base_mb": base / MB, "peak_extra_mb": (peak_memory_bytes(CPU) - base) / MB,
            "device_peak_extra_mb": None if run_device.type == "cpu" else
            ((peak_memory_bytes(run_device) or 0) - (device_base or 0)) / MB}


def peak_formula_bytes(steps: int, matched: int, pair_bytes: int, group_sizes: list[int], workers: int,
                       targets: int = 1) -> int:
    """docs/scale.md's peak extra memory of an FGMT run on the CPU, less the activations of
    one backward pass: the pairs (1 + K)·T·P·b, one float32 gradient 4·P, each target's kept
    float64 cost matrices K·Σ n_g²·8, and the assignment solves in flight (tied copy and
    negated copy: 2·n²·8 each, `workers` at once) plus one tie pattern per group size."""
    pairs = (1 + targets) * steps * matched * pair_bytes
    costs = targets * sum(n * n for n in group_sizes) * 8
    largest = sorted(group_sizes, reverse=True)
    solves = sum(2 * n * n * 8 for n in largest[:workers]) + sum(n * n * 8 for n in set(group_sizes))
    return pairs + 4 * matched + costs + solves


def in_fresh_process(fn, *args):
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-fgmt", action="store_true")
    parser.add_argument("--skip-derivation", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the FGMT run")
    parser.add_argument("--layers", type=int, default=12, help="GPT-2 blocks of the FGMT run (12: GPT-2-small)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="the FGMT run's device (its pairs and cost products too)")
    parser.add_argument("--solve-threads", type=int, default=None,
                        help="threads for independent assignment solves (default: --threads)")
    args = parser.parse_args()
    if not args.skip_derivation:
        print("## Spec derivation (export + rule table + float64 self-check), 1 thread, fresh process each")
        print(f"{'model':<12} {'params':>8} {'groups':>7} {'seconds':>8} {'model MB':>9} {'peak extra MB':>14}")
        for label in MODELS:
            row = in_fresh_process(derivation, label)
            print(f"{label:<12} {row['params'] / 1e6:>7.1f}M {row['groups']:>7} {row['seconds']:>8.1f} "
                  f"{row['model_mb']:>9.0f} {row['peak_extra_mb']:>14.0f}", flush=True)
    if args.skip_fgmt:
        return
    row = in_fresh_process(fgmt_gpt2, args.steps, args.threads, args.solve_threads, args.layers,
                           args.device)
    gradient, matching = row["gradient_s"], row["matching_s"]
    print(f"\n## FGMT on GPT-2-small, {args.layers} of 12 blocks ({row['params'] / 1e6:.1f}M parameters, {row['matched'] / 1e6:.1f}M "
          f"matched), T={row['steps']}, G=1, batch 8 x 64 tokens, pairs on the {args.device} in bfloat16, "
          f"{args.threads} thread(s), solves on {args.solve_threads or args.threads}, device {args.device}")
    print(f"total {row['seconds']:.1f} s; per step: gradients (source + target) "
          f"{sum(gradient) / len(gradient):.1f} s, matching {sum(matching) / len(matching):.1f} s "
          f"(steps: {', '.join(f'{m:.1f}' for m in matching)} s)")
    print(f"memory: process before the run {row['base_mb']:.0f} MB, peak extra {row['peak_extra_mb']:.0f} MB; "
          f"pair bank by the formula 2 · T · P · 2 B = {row['bank_mb']:.0f} MB; whole peak by docs/scale.md's "
          f"formula, less activations: {row['formula_mb']:.0f} MB")
    if row["device_peak_extra_mb"] is not None:
        print(f"device memory: peak extra {row['device_peak_extra_mb']:.0f} MB")
    # Solve threads never change it; torch's thread count may (gradients round differently).
    print(f"permutations found: sha256 {row['perm_sha256']}")


if __name__ == "__main__":
    main()
