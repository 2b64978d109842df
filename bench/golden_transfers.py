"""Bit-identity of transfer results across a refactor: seeded runs, sha256 of every tensor.

    python bench/golden_transfers.py --out before.json      # on the old revision
    python bench/golden_transfers.py --compare before.json  # on the new one: a table, exit 1 on a change

Runs the `transfer` executor (the interface the worker uses) on CPU for an MLP, a CNN
with BatchNorm and the zoo's transformer, with every method (fgmt, gmt, naive, oracle),
two targets each, eval data (best-step selection, BN re-estimation) and permutations
kept; hashes each tensor of each result file. Inputs are seeded random checkpoints and
data: this checks determinism of the code path, not quality. Deterministic on one
machine with a fixed thread count (OMP_NUM_THREADS=1 recommended); other machines may
round differently, so the hashes are compared run against run, not committed.
"""

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from trajx.engine.zoo import example_input, init_state_dict
from trajx.executors import RunContext, executor_for
from trajx.io import load_tensors, save_tensors
from trajx.job_spec import parse_job_spec

ARCHS = {
    "mlp": ("mlp", {"in_features": 12, "hidden": [16, 16], "num_classes": 4}),
    "cnn_bn": ("cnn", {"in_channels": 1, "image_size": 8, "channels": [8, 8], "fc": [16],
                       "batchnorm": True, "pooling": "flatten", "num_classes": 4}),
    "transformer": ("transformer", {"input": "tokens", "d_in": 6, "seq_len": 5, "d_model": 16, "num_heads": 2,
                                    "num_layers": 1, "num_classes": 4}),
}
METHODS = ("fgmt", "gmt", "naive", "oracle")


def _moved(state: dict[str, torch.Tensor], seed: int, scale: float) -> dict[str, torch.Tensor]:
    """`state` plus seeded noise on its floating tensors (a stand-in for training)."""
    generator = torch.Generator().manual_seed(seed)
    return {n: t + scale * torch.randn(t.shape, generator=generator) if t.is_floating_point() and "running" not in n
            else t.clone() for n, t in state.items()}


def write_inputs(directory: Path, arch: str, config: dict) -> dict:
    """Seeded source trajectory (3 points), targets, trained targets and data; returns a spec."""
    theta0 = init_state_dict(arch, config, 0)
    files = {"theta0": theta0, "theta1": _moved(theta0, 1, 0.02), "theta2": _moved(theta0, 2, 0.04),
             "trained1": _moved(init_state_dict(arch, config, 1), 3, 0.04),
             "trained2": _moved(init_state_dict(arch, config, 2), 4, 0.04)}
    for name, tensors in files.items():
        save_tensors(directory / f"{name}.safetensors", tensors)
    for name, seed, count in (("train", 5, 48), ("eval", 6, 24)):
        inputs = example_input(arch, config, batch=count, generator=torch.Generator().manual_seed(seed))
        targets = torch.randint(config["num_classes"], (count,), generator=torch.Generator().manual_seed(seed))
        save_tensors(directory / f"{name}.safetensors", {"inputs": inputs, "targets": targets})
    return {"arch": {"name": arch, "config": config},
            "source": [str(directory / f"theta{i}.safetensors") for i in range(3)],
            "targets": [{"seed": s, "trained": str(directory / f"trained{s}.safetensors")} for s in (1, 2)],
            "train_data": str(directory / "train.safetensors"), "eval_data": str(directory / "eval.safetensors"),
            "params": {"steps": 3, "batch_size": 16, "bn_batches": 2, "seed": 7, "device": "cpu"}}


def tensor_hashes(path: Path) -> dict[str, str]:
    return {name: hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
            for name, t in sorted(load_tensors(path, path.name).items())}


def run_all() -> dict[str, dict[str, str]]:
    """case -> {result file/tensor -> sha256}."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (arch, config) in ARCHS.items():
            inputs = Path(tmp) / case
            inputs.mkdir()
            base = write_inputs(inputs, arch, config)
            for method in METHODS:
                out = Path(tmp) / f"{case}-{method}"
                out.mkdir()
                spec = parse_job_spec({**base, "method": method})
                manifest = executor_for(spec.kind)(spec, Path, out, RunContext())
                results[f"{case}/{method}"] = {
                    f"{f.path}:{name}": digest for f in manifest.files if f.path.endswith(".safetensors")
                    for name, digest in tensor_hashes(out / f.path).items()}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the hashes here")
    parser.add_argument("--compare", type=Path, help="compare with hashes written earlier")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = run_all()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, sort_keys=True))
    if not args.compare:
        return 0
    before = json.loads(args.compare.read_text())
    table = Table(title=f"transfer results vs {args.compare.name} (sha256 of every tensor)")
    for column in ("case", "tensors", "identical", "differ"):
        table.add_column(column, justify="right" if column != "case" else "left")
    changed = 0
    for case in sorted(before.keys() | results.keys()):
        old, new = before.get(case, {}), results.get(case, {})
        same = sum(old.get(key) == digest for key, digest in new.items())
        differ = len(old.keys() | new.keys()) - same
        changed += differ
        table.add_row(case, str(len(new)), str(same), str(differ))
    Console().print(table)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
