"""Large groups: exact assignment solves of 3072- and 5632-unit groups, by method (docs/scale.md).

    # capture a GPT-2 replay's 3072-unit problems into DIR (the 2-block replay of
    # bench_hf_cost.py, T = 4; ≈20 min on a busy 2-core machine), then measure them
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python bench/bench_large_groups.py --gpt2 DIR --capture
    # measure problems saved before, and a synthetic 5632-unit warm sequence
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python bench/bench_large_groups.py --gpt2 DIR --synthetic 8

A problem is a tie-broken cost matrix and the warm state (`WarmLap`'s column prices and
assignment) it was solved from in the run that produced it. Every method solves every problem
from that state; scipy's cold `linear_sum_assignment` gives the exact answer each is compared
with. Methods: `dense` (`WarmLap(candidates=0)`: every Dijkstra step scans all columns, the
solver before this benchmark), `candidates k` (`WarmLap(candidates=k)`, each row's k cheapest
columns and the rest on demand; k = 16 is the default), `scipy` (cold), `lapx` (cold, with
--lapx). Columns: seconds per problem (median, max) and in all, how often the answer equals
the exact one, augmenting paths, and rows scanned in full (a row whose bound the search
reached, `candidate_lap`). The synthetic set is shaped like a 1B model's MLP group (5632
units): products of low-rank-plus-noise matrices over a reduced inner dimension, a sequence
of T steps, each adding a pair and then moving the neighbouring permutation by a shrinking
fraction, as the descent does; each method runs the sequence with its own warm state.
"""

import argparse
import itertools
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np

from bench.tables import table
from trajx.engine.matching.solvers import WarmStarted, break_ties, lapx_solver, scipy_solver
from trajx.engine.matching.warm_lap import WarmLap


class _Recorder(WarmLap):
    """WarmLap that saves each large problem it is given, with its state, before solving it."""

    numbers = itertools.count()
    lock = threading.Lock()

    def __init__(self, folder: Path, min_units: int) -> None:
        super().__init__()
        self.folder, self.record_from = folder, min_units

    def __call__(self, cost: np.ndarray) -> np.ndarray:
        if cost.shape[0] >= self.record_from:
            cold = self._prices is None or self._prices.shape[0] != cost.shape[0]
            with self.lock:
                number = next(self.numbers)
            np.savez(self.folder / f"lap_{number:03d}.npz", cost=cost, tied=True,
                     prices=np.zeros(0) if cold else self._prices,
                     cols=np.zeros(0, dtype=np.int64) if cold else self._cols)
        return super().__call__(cost)


def capture_gpt2(folder: Path, layers: int, threads: int, min_units: int) -> None:
    """Run bench_hf_cost's GPT-2 replay, saving every problem of ≥ min_units units in `folder`."""
    from bench.bench_hf_cost import fgmt_gpt2  # torch and transformers only when capturing

    folder.mkdir(parents=True, exist_ok=True)
    with mock.patch.object(WarmStarted, "sequence", staticmethod(lambda: _Recorder(folder, min_units))):
        fgmt_gpt2(4, threads, None, layers=layers)


def saved_problems(folder: Path, limit: int | None):
    """(cost, prices, cols) per saved problem, in order. Files without `tied` hold the cost
    before tie-breaking (as the descent computes it) and are tie-broken here."""
    paths = sorted(folder.glob("lap_*.npz"))[:limit]
    if not paths:
        raise SystemExit(f"no lap_*.npz problems in {folder}")
    for path in paths:
        with np.load(path) as saved:
            cost = saved["cost"] if "tied" in saved else break_ties(saved["cost"])
            prices, cols = saved["prices"], saved["cols"]
        yield cost, (prices if prices.size else None), (cols if cols.size else None)


def synthetic_problems(units: int, inner: int, steps: int, moves: tuple[float, ...], shared: float,
                       seed: int):
    """A 1B-model-shaped MLP group's problems (cost, None, None): each step adds a pair
    (X_t, Y_t), X_t = X + drift, Y_t = Y + drift, with Y = shared · X's units in another order
    plus noise, and the cost is Σ_t X_tᵀ Y_t[P] with P the neighbouring group's permutation of the
    inner axis; after a step's first solve P moves by each fraction of `moves` in turn."""
    rng = np.random.default_rng(seed)
    rank = 32

    def low_rank_plus_noise() -> np.ndarray:
        signal = rng.standard_normal((inner, rank)) @ rng.standard_normal((rank, units)) / np.sqrt(rank)
        return (signal + rng.standard_normal((inner, units))).astype(np.float32)

    x = low_rank_plus_noise()
    y = shared * x[:, rng.permutation(units)] + rng.standard_normal((inner, units)).astype(np.float32)
    neighbour = np.arange(inner)
    xs, ys = [], []
    for _ in range(steps):
        xs.append(x + 0.3 * rng.standard_normal(x.shape).astype(np.float32))
        ys.append(y + 0.3 * rng.standard_normal(y.shape).astype(np.float32))
        for move in (0.0, *moves):
            moved = rng.choice(inner, int(move * inner), replace=False)
            neighbour[moved] = neighbour[rng.permutation(moved)]
            cost = np.vstack(xs).T.astype(np.float64) @ np.vstack([b[neighbour] for b in ys]).astype(np.float64)
            yield break_ties(cost), None, None


def methods(candidates: list[int], with_lapx: bool) -> dict:
    """Method name -> a factory of a solver for one sequence (warm methods) or None (cold)."""
    chosen = {"dense": lambda: WarmLap(candidates=0)}
    for k in candidates:
        chosen[f"candidates {k}"] = lambda k=k: WarmLap(candidates=k, min_units=0)
    chosen["scipy"] = None
    if with_lapx:
        chosen["lapx"] = None
    return chosen


def measure(problems, chosen: dict, *, replay_state: bool) -> dict:
    """Per method: seconds, equal-to-exact flags, paths and full row scans per problem."""
    stats = {name: {"seconds": [], "equal": [], "paths": [], "scans": []} for name in chosen}
    sequences = {name: make() for name, make in chosen.items() if make is not None}
    for number, (cost, prices, cols) in enumerate(problems):
        start = time.perf_counter()
        exact = scipy_solver(cost)
        stats["scipy"]["seconds"].append(time.perf_counter() - start)
        stats["scipy"]["equal"].append(True)
        line = [f"problem {number}: scipy {stats['scipy']['seconds'][-1]:.2f} s"]
        for name, make in chosen.items():
            if name == "scipy":
                continue
            if make is None:  # lapx, cold
                start = time.perf_counter()
                answer = lapx_solver(cost)
                seconds, paths, scans = time.perf_counter() - start, 0, 0
            else:
                solver = sequences[name]
                if replay_state:  # start from the state the recorded run had
                    solver = sequences[name] = make()
                    if prices is not None:
                        solver._prices, solver._cols = prices.copy(), cols.copy()
                paths, scans = solver.paths, solver.row_scans
                start = time.perf_counter()
                answer = solver(cost)
                seconds = time.perf_counter() - start
                paths, scans = solver.paths - paths, solver.row_scans - scans
            row = stats[name]
            row["seconds"].append(seconds)
            row["equal"].append(bool(np.array_equal(answer, exact)))
            row["paths"].append(paths)
            row["scans"].append(scans)
            line.append(f"{name} {seconds:.2f} s ({paths} paths, {scans} scans{'' if row['equal'][-1] else ', NOT EXACT'})")
        print(", ".join(line), flush=True)
    return stats


def print_table(title: str, stats: dict) -> None:
    dense_total = sum(stats["dense"]["seconds"])
    rows = []
    for name, row in stats.items():
        seconds = np.array(row["seconds"])
        warm = name not in ("scipy", "lapx")
        rows.append((name, str(len(seconds)), f"{np.median(seconds):.3f}", f"{seconds.max():.3f}",
                     f"{seconds.sum():.2f}", f"{dense_total / seconds.sum():.2f}×",
                     f"{100 * np.mean(row['equal']):.0f}",
                     f"{np.median(row['paths']):.0f}" if warm else "-",
                     f"{np.median(row['scans']):.0f}" if warm else "-"))
    table(title, ("method", "problems", "median s", "max s", "total s", "dense / method",
                  "equal to exact %", "paths (median)", "full row scans (median)"), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpt2", type=Path, help="folder of saved 3072-unit GPT-2 problems (lap_*.npz)")
    parser.add_argument("--capture", action="store_true", help="run the GPT-2 replay and save its problems first")
    parser.add_argument("--layers", type=int, default=2, help="GPT-2 blocks of the captured replay")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the captured replay")
    parser.add_argument("--limit", type=int, default=None, help="measure the first N saved problems only")
    parser.add_argument("--synthetic", type=int, default=0, metavar="STEPS",
                        help="FGMT steps of the synthetic 5632-unit sequence (1 + 3 solves each; 0: none)")
    parser.add_argument("--units", type=int, default=5632)
    parser.add_argument("--inner", type=int, default=256, help="inner dimension of each synthetic pair")
    parser.add_argument("--shared", type=float, default=0.1,
                        help="weight of the synthetic models' shared part (lower: harder problems)")
    parser.add_argument("--candidates", default="16", help="comma-separated candidates per row to compare")
    parser.add_argument("--lapx", action="store_true", help="also time lapx's lapjv (slow: ~1 min per 3072 problem)")
    args = parser.parse_args()
    chosen = methods([int(k) for k in args.candidates.split(",")], args.lapx)
    if args.gpt2 is not None:
        if args.capture:
            capture_gpt2(args.gpt2, args.layers, args.threads, min_units=3072)
        stats = measure(saved_problems(args.gpt2, args.limit), chosen, replay_state=True)
        print_table(f"GPT-2-small 3072-unit MLP groups ({args.gpt2})", stats)
    if args.synthetic:
        problems = synthetic_problems(args.units, args.inner, args.synthetic, (0.5, 0.15, 0.03),
                                      args.shared, seed=0)
        stats = measure(problems, chosen, replay_state=False)
        print_table(f"synthetic {args.units}-unit MLP group, {args.synthetic} steps, warm sequence", stats)


if __name__ == "__main__":
    main()
