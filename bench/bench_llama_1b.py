"""A TinyLlama-shaped transfer through `trajx run`, as a user would run it (issue 29, item 6).

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 .venv/bin/python bench/bench_llama_1b.py --estimate 1,2,6,22
    PYTHONPATH=$PWD OMP_NUM_THREADS=2 .venv/bin/python bench/bench_llama_1b.py --layers 1
    PYTHONPATH=$PWD OMP_NUM_THREADS=2 .venv/bin/python bench/bench_llama_1b.py --layers 2 --timeout 2400

For each `--layers` N it writes what a user would have, in a scratch folder: θ⁰ and a target
checkpoint drawn by `trajx init` (seeds 0 and 1) from a Hugging Face `llama` config with
TinyLlama's shape (vocabulary 32000, hidden 2048, MLP 5632, 32 heads, 4 key/value heads) but
N of its 22 layers, θ¹ = θ⁰ + 0.01·noise (the synthetic trajectory), a train shard of random
tokens, and a job spec (FGMT, T = 2, one target, pairs in bfloat16 on the CPU). Then it runs
`trajx run spec.json --out DIR` in a child process under `timeout`, polling the child tree's
resident memory, and prints parameters, matched parameters, docs/scale.md's peak formula
(`bench_hf_cost.peak_formula_bytes`, less activations), the inputs the runner holds besides
(the model and three float32 checkpoints, 16·P), the measured peaks (whole process, and the
transfer alone as the run's report gives it) and seconds (total, gradients and matching per step).

`--estimate` prints the formula only (nothing runs), with the groups such a model has: the
residual stream (hidden), and per layer the key/value heads and the MLP's hidden units (spec
derived on a 1-layer model; every parameter is matched).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.bench_hf_cost import peak_formula_bytes
from trajx.engine.zoo import build_model
from trajx.io import load_tensors, save_tensors

GB = 1e9
TRAJX = Path(sys.executable).parent / "trajx"
TINYLLAMA = {"task": "causal-lm", "model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
             "intermediate_size": 5632, "num_attention_heads": 32, "num_key_value_heads": 4,
             "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
PAIR_BYTES = 2  # bfloat16
INPUT_COPIES = 4  # the model and the three float32 checkpoints the runner loads (θ⁰, θ¹, target)


def llama_config(layers: int) -> dict:
    return {**TINYLLAMA, "num_hidden_layers": layers}


def parameter_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape, from a model built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = build_model("hf", llama_config(layers))
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def assumed_groups(layers: int) -> list[int]:
    """The group sizes the derived spec has (checked on the 1-layer model)."""
    return [TINYLLAMA["hidden_size"]] + [TINYLLAMA["num_key_value_heads"], TINYLLAMA["intermediate_size"]] * layers


def numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def write_inputs(directory: Path, layers: int, steps: int, env: dict) -> Path:
    """θ⁰, θ¹, the target, a train shard and the job spec under `directory`; the spec's path."""
    config = json.dumps(llama_config(layers))
    for seed, name in ((0, "theta0"), (1, "target")):
        subprocess.run([str(TRAJX), "init", "--arch", "hf", "--config", config, "--seed", str(seed),
                        "--out", str(directory / f"{name}.safetensors")], check=True, env=env)
    theta = load_tensors(directory / "theta0.safetensors", "theta0")
    generator = torch.Generator().manual_seed(2)
    for tensor in theta.values():  # in place: one model's worth of memory
        tensor.add_(torch.randn(tensor.shape, generator=generator), alpha=0.01)
    save_tensors(directory / "theta1.safetensors", theta)
    del theta
    tokens = torch.randint(0, TINYLLAMA["vocab_size"], (16, 64), generator=generator)
    save_tensors(directory / "train.safetensors", {"inputs": tokens, "targets": tokens.clone()})
    spec = {"method": "fgmt", "arch": {"name": "hf", "config": llama_config(layers)},
            "source": ["theta0.safetensors", "theta1.safetensors"],
            "targets": [{"checkpoint": "target.safetensors"}], "train_data": "train.safetensors",
            "params": {"steps": steps, "batch_size": 8, "pair_dtype": "bfloat16", "pair_device": "cpu",
                       "device": "cpu"}}
    path = directory / "spec.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                stack += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def _resident(pid: int) -> int:
    """The larger of `pid`'s resident set and its high-water mark, in bytes (0 once gone).
    The high-water mark catches peaks between polls; the runner resets it before the
    transfer, which the resident set of the derivation's plateau still catches."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except (OSError, ValueError):
        return 0
    return max(int(fields.get(key, "0 kB").split()[0]) for key in ("VmRSS", "VmHWM")) * 1024


def run_cli(spec: Path, out: Path, timeout: int, env: dict) -> tuple[int, float, int]:
    """`trajx run spec --out out` under `timeout`: exit code, wall seconds, peak bytes of the tree."""
    peak = 0
    start = time.perf_counter()
    child = subprocess.Popen(["timeout", str(timeout), str(TRAJX), "run", str(spec), "--out", str(out)], env=env)
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            # Sum over the tree (one process today); the poller's own resets nothing.
            peak = max(peak, sum(_resident(pid) for pid in _tree(child.pid)[1:]))
            done.wait(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    code = child.wait()
    seconds = time.perf_counter() - start
    done.set()
    poller.join()
    return code, seconds, peak


def formula_row(layers: int, steps: int, workers: int, groups: list[int] | None = None,
                matched: int | None = None) -> dict:
    """Parameters and the formula's peak; `groups` and `matched` default to what the derived
    spec of this shape has (`assumed_groups`, every parameter matched)."""
    params = sum(numel(s) for s in parameter_shapes(layers).values())
    matched = params if matched is None else matched
    groups = assumed_groups(layers) if groups is None else groups
    return {"layers": layers, "params": params, "matched": matched,
            "formula": peak_formula_bytes(steps, matched, PAIR_BYTES, groups, workers),
            "inputs": INPUT_COPIES * 4 * params}


def measured_row(layers: int, steps: int, workers: int, timeout: int, keep: Path | None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    directory = Path(tempfile.mkdtemp(prefix=f"llama{layers}-", dir=keep))
    try:
        spec = write_inputs(directory, layers, steps, env)
        code, seconds, peak = run_cli(spec, directory / "out", timeout, env)
        row = {"layers": layers, "code": code, "seconds": seconds, "peak": peak}
        report_path = directory / "out" / "report.json"
        if code != 0 or not report_path.exists():
            return row | formula_row(layers, steps, workers)
        report = json.loads(report_path.read_text())
        shapes = parameter_shapes(layers)
        matched = sum(numel(shapes[name]) for name, axes in report["permutation_spec"].items()
                      if name in shapes and any(axis is not None for axis in axes))
        groups = [g["size"] for g in report["permutation_groups"]]
        metrics = report["targets"][0]["steps"]
        return row | formula_row(layers, steps, workers, groups, matched) | {
            "transfer_peak": report["timings"]["peak_memory_bytes"], "groups": len(groups),
            "gradient_s": [m["gradient_seconds"] + m["source_gradient_seconds"] for m in metrics],
            "matching_s": [m["matching_seconds"] for m in metrics]}
    finally:
        if keep is None:
            shutil.rmtree(directory, ignore_errors=True)


def print_table(rows: list[dict], measured: bool) -> None:
    head = "| layers | parameters | matched | formula GB (less activations) | + inputs 16·P GB |"
    if measured:
        head += " exit | peak RSS GB (whole run) | peak RSS GB (transfer, report) | wall s | gradients s/step | matching s (per step) |"
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for r in rows:
        line = (f"| {r['layers']} | {r['params'] / 1e6:.1f} M | {r['matched'] / 1e6:.1f} M | {r['formula'] / GB:.2f} "
                f"| {(r['formula'] + r['inputs']) / GB:.2f} |")
        if measured:
            transfer = f"{r['transfer_peak'] / GB:.2f}" if r.get("transfer_peak") else "-"
            grads, matching = r.get("gradient_s"), r.get("matching_s")
            per_step = (f"{sum(grads) / len(grads):.1f} | {' + '.join(f'{m:.0f}' for m in matching)}"
                        if grads else "- | -")
            line += f" {r['code']} | {r['peak'] / GB:.2f} | {transfer} | {r['seconds']:.0f} | {per_step} |"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="1", help="comma-separated layer counts to run (22: TinyLlama)")
    parser.add_argument("--estimate", default=None, help="comma-separated layer counts: print the formula only")
    parser.add_argument("--steps", type=int, default=2, help="T")
    parser.add_argument("--timeout", type=int, default=2400, help="seconds before `trajx run` is stopped")
    parser.add_argument("--keep", type=Path, default=None, help="keep inputs and results under this folder")
    args = parser.parse_args()
    workers = torch.get_num_threads()  # the child's torch threads, hence its solves at once (OMP_NUM_THREADS)
    if args.estimate:
        rows = [formula_row(n, args.steps, workers) for n in map(int, args.estimate.split(","))]
        print(f"## docs/scale.md's formula, T={args.steps}, K=1, bfloat16 pairs, {workers} solves at once")
        print_table(rows, measured=False)
        return
    rows = []
    for layers in map(int, args.layers.split(",")):
        rows.append(measured_row(layers, args.steps, workers, args.timeout, args.keep))
    print(f"\n## `trajx run`, FGMT, T={args.steps}, one target, bfloat16 pairs on the CPU, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    print_table(rows, measured=True)


if __name__ == "__main__":
    main()
