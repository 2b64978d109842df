"""Engine benchmark: quality, cost and memory of GMT/FGMT (prints tables, asserts nothing).

    .venv/bin/python bench/bench_engine.py                 # default, a few minutes on 2 CPU cores
    .venv/bin/python bench/bench_engine.py --seeds 5 --steps 50 --resnet18 --device cuda

Quality: sklearn digits with the zoo `mlp` and a `cnn` with BatchNorm (digits as 1x8x8
images). Per seed pair a source is trained with SGD (θ⁰, θᵀ kept), then the target init
(untransferred), Naive, FGMT, GMT and Oracle (the target trained for real) are evaluated on
the held-out split. Memory: the FGMT pair bank and one matching solve on ResNet-20 for
T = 10, 30, 100, and ResNet-18 at T = 30 (estimated, or measured with --resnet18).
FGMT's cost against its floor is bench/bench_floor.py's.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from trajx.engine.batches import BatchSampler, Dataset
from trajx.engine.bn import reestimate_batch_norm
from trajx.engine.losses import CLASSES_OR_VALUES
from trajx.engine.matching.descent import PairBank, match
from trajx.engine.matching.solvers import get_solver
from trajx.engine.matching.warm_lap import WarmLap
from trajx.engine.metrics import evaluate
from trajx.engine.options import MatchingOptions, TransferOptions
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import resolve_device, transfer
from trajx.engine.transfer.methods import FGMT, GMT, Naive, Oracle
from trajx.engine.zoo import build_model, example_input, init_state_dict
from trajx.resources import current_memory_bytes, peak_memory_bytes, reset_peak_memory

SOLVER = get_solver("auto")  # what a job gets by default

MB = 2**20


@dataclass(frozen=True)
class Task:
    """An architecture on digits with the SGD recipe that trains its source."""

    label: str
    arch: tuple[str, dict]
    images: bool
    epochs: int
    lr: float


TASKS = {
    "mlp": Task("MLP 64-256-256-10", ("mlp", {"in_features": 64, "hidden": [256, 256], "num_classes": 10}),
                images=False, epochs=20, lr=0.005),
    "cnn": Task("CNN+BN 32-32 (flatten) fc64",
                ("cnn", {"in_channels": 1, "image_size": 8, "channels": [32, 32], "fc": [64],
                         "batchnorm": True, "pooling": "flatten"}),
                images=True, epochs=3, lr=0.005),
}


def digits(images: bool) -> tuple[Dataset, Dataset]:
    data = load_digits()
    inputs = torch.tensor(data.data, dtype=torch.float32) / 16.0
    if images:
        inputs = inputs.reshape(-1, 1, 8, 8)
    targets = torch.tensor(data.target)
    return Dataset(inputs[:1400], targets[:1400]), Dataset(inputs[1400:], targets[1400:])


def sgd(model: nn.Module, data: Dataset, task: Task, seed: int) -> dict[str, torch.Tensor]:
    """Train `model` in place (SGD, momentum 0.9, batch 64); returns the final state."""
    optimizer = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=0.9)
    sampler = BatchSampler(len(data), 64, torch.Generator().manual_seed(seed))
    model.train()
    for _ in range(task.epochs * ((len(data) + 63) // 64)):
        inputs, targets, _ = data.batch(sampler.draw(), "cpu")
        optimizer.zero_grad()
        CLASSES_OR_VALUES.loss(model(inputs), targets).backward()
        optimizer.step()
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def measured(device: torch.device, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """(fn(*args, **kwargs), seconds, peak extra MB over the memory in use before the call)."""
    reset_peak_memory(device)
    before = current_memory_bytes(device) or 0
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return result, seconds, max(0, (peak_memory_bytes(device) or 0) - before) / MB


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def quality(task: Task, args: argparse.Namespace, device: torch.device) -> None:
    train, test = digits(task.images)
    model = build_model(*task.arch)
    spec = derive_spec(model, example_input(*task.arch))
    variants = {sweeps: TransferOptions(steps=args.steps, batch_size=128, device=device.type,
                                        matching=MatchingOptions(step_sweeps=sweeps),
                                        pair_weighting=args.pair_weighting)
                for sweeps in args.step_sweeps}
    rows: dict[str, dict[str, list[float]]] = {}

    def record(method: str, last: float, best: float, seconds: float, memory: float) -> None:
        row = rows.setdefault(method, {"last": [], "best": [], "seconds": [], "memory": []})
        for key, value in zip(("last", "best", "seconds", "memory"), (last, best, seconds, memory)):
            row[key].append(value)

    for pair in range(args.seeds):
        source_init = init_state_dict(*task.arch, seed=pair)
        target_init = init_state_dict(*task.arch, seed=1000 + pair)
        source_model = build_model(*task.arch)
        source_model.load_state_dict(source_init)
        source_final, seconds, memory = measured(torch.device("cpu"), sgd, source_model, train, task, pair)
        accuracy = evaluate(source_model, test, 512, "cpu")["accuracy"]
        record("source (trained)", accuracy, accuracy, seconds, memory)
        target_model = build_model(*task.arch)
        target_model.load_state_dict(target_init)
        target_final = sgd(target_model, train, task, 1000 + pair)
        init_model = build_model(*task.arch)
        init_model.load_state_dict(target_init)
        reestimate_batch_norm(init_model, [train.inputs[:128]])
        accuracy = evaluate(init_model, test, 512, "cpu")["accuracy"]
        record("target init", accuracy, accuracy, 0.0, 0.0)
        runs = [(method.name, variants[args.step_sweeps[0]], method) for method in (Naive(), Oracle([target_final]))]
        runs += [(method.name if len(variants) == 1 else f"{method.name}, {_sweeps_label(sweeps)}", params, method)
                 for method in (FGMT(), GMT()) for sweeps, params in variants.items()]
        for label, params, method in runs:
            result, seconds, memory = measured(
                device, transfer, build_model(*task.arch), spec, [source_init, source_final], [target_init],
                train, params, method=method, solver=SOLVER, eval_data=test)
            target = result.targets[0]
            record(label, target.steps[-1]["accuracy"], target.steps[target.best_step - 1]["accuracy"],
                   seconds, memory)

    print(f"\n## Quality: {task.label} on digits (1400 train / 397 test), T={args.steps}, "
          f"cosine schedule, pair_weighting {args.pair_weighting}, {args.seeds} seed pairs, device {device}")
    print(f"{'method':<40} {'acc last %':>14} {'acc best %':>14} {'seconds':>14} {'peak extra MB':>14}")
    for method, row in rows.items():
        print(f"{method:<40} {mean_std(row['last'], 100):>14} {mean_std(row['best'], 100):>14} "
              f"{mean_std(row['seconds'], 1, 2):>14} {mean_std(row['memory']):>14}")


def _sweeps_label(sweeps: int | None) -> str:
    return "sweeps/step: until converged" if sweeps is None else f"sweeps/step: {sweeps}"


def _step_sweeps(text: str) -> list[int | None]:
    return [None if token == "converged" else int(token) for token in text.split(",")]


def bank_memory(depth: int, steps: int, device: torch.device, solve: bool = True) -> tuple[int, float, int]:
    """(bank bytes, peak extra MB for filling a T-pair bank and one matching sweep, parameter count)."""
    arch = ("resnet", {"depth": depth})
    model = build_model(*arch)
    spec = derive_spec(model, example_input(*arch))
    names = [n for n, _ in model.named_parameters()
             if any(g is not None for g in spec.param_groups.get(n, ()))]
    shapes = {n: tuple(model.state_dict()[n].shape) for n in names}
    generator = torch.Generator().manual_seed(0)

    def fill_and_solve() -> int:
        bank = PairBank.allocate(shapes, steps, device)
        for _ in range(steps):
            pair = [{n: torch.randn(s, generator=generator).to(device) for n, s in shapes.items()}
                    for _ in range(2)]
            bank.add(*pair)
        if solve:
            match(spec, bank, max_iter=1, generator=torch.Generator().manual_seed(0))
        return bank.nbytes

    WarmLap()(np.eye(2))  # the solver's compiled code is part of the process, like torch's
    nbytes, _, peak = measured(device, fill_and_solve)
    return nbytes, peak, sum(s.numel() for s in model.parameters())


def memory(args: argparse.Namespace, device: torch.device) -> None:
    print(f"\n## Memory: FGMT gradient pairs (float32, on {device}) + one matching sweep at full size")
    print(f"{'model':<10} {'T':>5} {'bank MB (exact)':>16} {'peak extra MB (measured)':>25}")
    cases = [(20, 10), (20, 30), (20, 100)] + ([(18, 30)] if args.resnet18 else [])
    # A fresh process per case: memory freed by an earlier case would hide part of the peak.
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for depth, steps in cases:
            nbytes, peak, _ = pool.apply(bank_memory, (depth, steps, device))
            print(f"{f'ResNet-{depth}':<10} {steps:>5} {nbytes / MB:>16.1f} {peak:>25.1f}")
    if not args.resnet18:
        count = sum(p.numel() for p in build_model("resnet", {"depth": 18}).parameters())
        print(f"{'ResNet-18':<10} {30:>5} {2 * 30 * count * 4 / MB:>16.1f} {'(run with --resnet18)':>25}")


def _reexec_with_exact_rss() -> None:
    """Restart once with glibc returning freed tensors to the OS at once.

    By default glibc keeps freed memory for reuse (and raises its mmap threshold as big
    blocks are freed), so a later run's peak RSS would hide inside an earlier run's
    leftovers; a fixed mmap threshold makes every tensor above 64 KiB its own mapping.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
        os.execv(sys.executable, [sys.executable, *sys.argv])


def main() -> None:
    _reexec_with_exact_rss()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seed pairs for the quality table")
    parser.add_argument("--steps", type=int, default=20, help="T (the paper uses 30)")
    parser.add_argument("--tasks", default="mlp,cnn", help="quality tasks: mlp,cnn")
    parser.add_argument("--sections", default="quality,memory")
    parser.add_argument("--step-sweeps", type=_step_sweeps, default=[MatchingOptions().step_sweeps],
                        help="FGMT/GMT sweeps per step after the first, a row each: e.g. 1,2,converged")
    parser.add_argument("--resnet18", action="store_true", help="measure ResNet-18 T=30 (needs ~4 GB)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--pair-weighting", default="none",
                        help="quality tables for each of these pair_weightings (comma-separated: none,unit)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    sections = args.sections.split(",")
    tasks = [TASKS[name] for name in args.tasks.split(",")]
    if "memory" in sections:
        memory(args, device)
    for task in tasks:
        for weighting in args.pair_weighting.split(",") if "quality" in sections else ():
            quality(task, argparse.Namespace(**{**vars(args), "pair_weighting": weighting}), device)


if __name__ == "__main__":
    main()
