"""Transfer quality beyond classifiers (prints tables, asserts nothing).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_lm.py              # ≈15 min on 2 busy CPU cores
    PYTHONPATH=$PWD .venv/bin/python bench/bench_lm.py --only vit --seeds 3

- `lm`: a GPT-2 family causal LM (`hf` architecture) trained character-level on the sources
  of Python's standard library (no download; files split into train and held-out), scored
  by held-out next-token accuracy and loss.
- `vit`: a Hugging Face ViT on scikit-learn's digits (8x8 images in 2x2 patches).

Each is run at two init scales (`initializer_range`): Hugging Face's default 0.02 and 0.2
(about 1/sqrt(width), PyTorch's default Linear scale). Per seed pair a source is trained
with AdamW (θ⁰, θᵀ kept), and the target init, Naive, FGMT, Oracle (the target trained for
real) and the trained source are evaluated on the held-out split.
"""

import argparse
import statistics
import time

import torch
from sklearn.datasets import load_digits

from tests.engine.stdlib_lm import gpt2_config, stdlib_text, trained_pair
from trajx.engine.batches import Dataset
from trajx.engine.metrics import evaluate
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import transfer
from trajx.engine.transfer.methods import FGMT, Naive, Oracle
from trajx.engine.zoo import build_model, example_input, task_for

INIT_SCALES = (0.02, 0.2)


def vit_config(init_std: float) -> dict:
    return {"task": "image-classification", "model_type": "vit", "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": 8, "patch_size": 2, "num_channels": 1, "num_labels": 10,
            "initializer_range": init_std}


def digits() -> tuple[Dataset, Dataset]:
    data = load_digits()
    inputs = torch.tensor(data.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    targets = torch.tensor(data.target)
    return Dataset(inputs[:1400], targets[:1400]), Dataset(inputs[1400:], targets[1400:])


def mean_std(values: list[float], scale: float = 1.0, digits_: int = 1) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits_}f} ± {std:.{digits_}f}"


def run(label: str, arch: tuple[str, dict], train: Dataset, held_out: Dataset, args: argparse.Namespace,
        train_steps: int, lr: float) -> None:
    task = task_for(*arch)
    spec = derive_spec(build_model(*arch), example_input(*arch))
    params = TransferOptions(steps=args.steps, batch_size=64, device="cpu")
    rows: dict[str, dict[str, list[float]]] = {}

    def record(method: str, metrics: dict[str, float], seconds: float) -> None:
        row = rows.setdefault(method, {"accuracy": [], "loss": [], "seconds": []})
        row["accuracy"].append(metrics["accuracy"])
        row["loss"].append(metrics["loss"])
        row["seconds"].append(seconds)

    def scored(state: dict[str, torch.Tensor]) -> dict[str, float]:
        model = build_model(*arch)
        model.load_state_dict(state)
        return evaluate(model, held_out, 256, "cpu", task)

    for pair in range(args.seeds):
        start = time.perf_counter()
        source_init, source_final = trained_pair(arch, train, train_steps, lr, 32, seed=pair)
        record("trained source", scored(source_final), time.perf_counter() - start)
        target_init, target_final = trained_pair(arch, train, train_steps, lr, 32, seed=1000 + pair)
        record("target init", scored(target_init), 0.0)
        for name, method in (("naive", Naive()), ("fgmt", FGMT()), ("oracle", Oracle([target_final]))):
            start = time.perf_counter()
            result = transfer(build_model(*arch), spec, [source_init, source_final], [target_init], train,
                              params, method=method, eval_data=held_out, task=task)
            record(name, result.targets[0].steps[-1], time.perf_counter() - start)

    print(f"\n## {label}, initializer_range {arch[1]['initializer_range']}, T={args.steps}, cosine, "
          f"{args.seeds} seed pairs, source {train_steps} AdamW steps lr {lr}; groups "
          f"{[g.size for g in spec.groups]}")
    print(f"{'method':<16} {'held-out acc %':>16} {'held-out loss':>16} {'seconds':>10}")
    for method in ("target init", "naive", "fgmt", "oracle", "trained source"):
        row = rows[method]
        print(f"{method:<16} {mean_std(row['accuracy'], 100):>16} {mean_std(row['loss'], 1, 3):>16} "
              f"{statistics.fmean(row['seconds']):>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="T of the transfer")
    parser.add_argument("--only", choices=("lm", "vit"))
    parser.add_argument("--init-scales", type=lambda text: [float(x) for x in text.split(",")],
                        default=list(INIT_SCALES), help="initializer_range values, e.g. 0.2")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared machine: one core per benchmark
    if args.only in (None, "lm"):
        train, held_out = stdlib_text(64, 400_000, 50_000)
        for scale in args.init_scales:
            run(f"char-level GPT-2 (64 wide, 2 layers, 4 heads, context 64) on the stdlib's sources "
                f"({len(train)} train / {len(held_out)} held-out windows)",
                ("hf", gpt2_config(width=64, layers=2, heads=4, length=64, init_std=scale)),
                train, held_out, args, train_steps=400, lr=3e-3)
    if args.only in (None, "vit"):
        train, held_out = digits()
        for scale in args.init_scales:
            run("ViT (64 wide, 2 layers, 4 heads, 2x2 patches) on digits (1400 train / 397 held-out)",
                ("hf", vit_config(scale)), train, held_out, args, train_steps=300, lr=1e-3)


if __name__ == "__main__":
    main()
