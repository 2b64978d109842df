"""Permutation-spec derivation cost per zoo architecture. Prints a table.

    .venv/bin/python bench/bench_spec.py [--repeats 3] [--device cpu|cuda]

For each architecture (default configs, example batch of 2): parameters, groups,
the time to export the model (`torch.export`) and derive the groups from its graph
(`derive_param_groups`), and the time of the
float64 self-check (`check_spec`); median over `--repeats` runs after one warm-up.
"""

import argparse
import statistics
import time
from functools import partial

import torch
from rich.console import Console
from rich.table import Table

from trajx.engine.permutation.spec import spec_from_param_groups
from trajx.engine.permutation.trace import check_spec, derive_param_groups
from trajx.engine.zoo import build_model, example_input

CASES = [
    ("mlp", {"in_features": 784, "hidden": [512, 512], "num_classes": 10}),
    ("cnn", {}),
    ("resnet", {"depth": 20}),
    ("resnet", {"depth": 18}),
    ("transformer", {}),
]


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    table = Table(title=f"spec derivation ({args.device}, torch {torch.__version__}, "
                        f"{torch.get_num_threads()} threads)")
    for column in ("architecture", "params", "groups", "export + derive s", "self-check s"):
        table.add_column(column, justify="left" if column == "architecture" else "right")
    for name, config in CASES:
        model = build_model(name, config).to(args.device)
        x = example_input(name, config).to(args.device)
        refs = derive_param_groups(model, x)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        spec = spec_from_param_groups(refs, shapes)
        trace_s = _median_seconds(partial(derive_param_groups, model, x), args.repeats)
        check_s = _median_seconds(
            lambda m=model, s=spec, x=x: check_spec(m, s, x, torch.Generator().manual_seed(0)),
            args.repeats)
        params = sum(p.numel() for p in model.parameters())
        label = f"{name} {config}" if config and name != "mlp" else name
        table.add_row(label, f"{params:,}", str(len(spec.groups)), f"{trace_s:.3f}", f"{check_s:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
