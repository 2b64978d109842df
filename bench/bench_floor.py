"""FGMT against its floor, and its matching against main's (issue 15). Prints tables.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_floor          # ~15 min on 2 busy CPU cores
    .venv/bin/python -m bench.bench_floor --steps 10,20 --tasks cnn --device cuda

For T = 10, 20, 40, 80, on the 64→512→512→10 MLP and the BatchNorm CNN of
bench_engine.py (digits, one 128-sample batch per gradient, G = 1, one target, no eval
data), one run each of:
- FGMT as it is: its seconds, matching seconds split into cost matrices and assignment
  solves (the solver is wrapped with a stopwatch), number of solves;
- the floor, what FGMT cannot avoid: its 2·G·T backward passes, bare, plus per step one
  cost matrix per group built from the new pair only and one assignment solve per group
  (the pairs are the floor's own gradients, accumulated as FGMT does);
- FGMT as main ran it: cost matrices rebuilt on every solve (bench/main_matching.py) and
  every assignment solved cold by `--main-solver` (default scipy): its matching seconds,
  split the same way. The permutations are identical (tests/engine/test_matching_identity.py),
  so both solve the same problems.
FGMT and the floor use one solver (`--solver`, default auto: the warm-started `jv`, which the
floor also warm-starts from its previous step, so the floor is as fast as it can be); every
run uses the same thread count
(OMP_NUM_THREADS, default 1, also passed to torch.set_num_threads). On the CPU, seconds
are this process's CPU seconds (`time.process_time`), not wall time: on a shared machine
other processes' load stretches wall time but not the work counted, so ratios stay fair.
FGMT's total counts both of its threads; its matching and solve seconds are the matching
thread's own (the next source gradient runs beside it on the other).
On CUDA they are wall seconds with device synchronisation.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

import trajx.engine.transfer.gmt as transfer_module
from bench import main_matching
from bench.bench_engine import TASKS, Task, digits, sgd
from trajx.engine.batches import BatchSampler
from trajx.engine.losses import CLASSES_OR_VALUES
from trajx.engine.matching.descent import PairBank
from trajx.engine.matching.solvers import Solver, WarmStarted, break_ties, get_solver
from trajx.engine.matching.warm_lap import WarmLap
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import Timings, resolve_device, transfer
from trajx.engine.transfer.methods import FGMT
from trajx.engine.zoo import build_model, example_input, init_state_dict

MLP512 = Task("MLP 64-512-512-10", ("mlp", {"in_features": 64, "hidden": [512, 512], "num_classes": 10}),
              images=False, epochs=20, lr=0.005)
FLOOR_TASKS = {"mlp": MLP512, "cnn": TASKS["cnn"]}


class Clock:
    """CPU seconds on the CPU, of the whole process or (`thread`) of the calling thread
    only; wall seconds after synchronising on CUDA."""

    def __init__(self, device: torch.device, thread: bool = False) -> None:
        self.device = device
        self.thread = thread

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.thread_time() if self.thread else time.process_time()


@dataclass
class Timed:
    """Wraps a function (a solver, `match`): seconds spent in it and calls made."""

    fn: Callable
    clock: Clock
    seconds: float = 0.0
    calls: int = 0

    def __call__(self, *args, **kwargs):
        start = self.clock()
        result = self.fn(*args, **kwargs)
        self.seconds += self.clock() - start
        self.calls += 1
        return result


class ClockedWarmStarted(WarmStarted):
    """The warm-started solver with every group's solves timed by one stopwatch."""

    def __init__(self, stopwatch: Timed) -> None:
        self.stopwatch = stopwatch

    def __call__(self, cost):
        return self.stopwatch(WarmLap(), cost)

    def sequence(self):
        return partial(self.stopwatch, WarmLap())


def clocked_solver(name: str, clock: Clock) -> tuple[Solver, Timed]:
    """The solver `name` for `match` (ours and main's) to solve through, and its stopwatch."""
    stopwatch = Timed(lambda solve, cost: solve(cost), clock)
    solver = get_solver(name)
    if isinstance(solver, WarmStarted):
        return ClockedWarmStarted(stopwatch), stopwatch
    return partial(stopwatch, solver), stopwatch


@dataclass
class Run:
    total: float
    matching: float
    solves: float
    calls: int
    backward_passes: int

    @property
    def costs(self) -> float:
        return self.matching - self.solves


class Case:
    """One architecture with its trained source, ready for FGMT, main's FGMT and the floor."""

    def __init__(self, task: Task, device: torch.device, solver: str, main_solver: str) -> None:
        self.task, self.device, self.solver, self.main_solver = task, device, solver, main_solver
        self.clock = Clock(device)
        # Matching runs on its own thread, beside the next source gradient: time it there.
        self.matching_clock = Clock(device, thread=True)
        self.train, _ = digits(task.images)
        model = build_model(*task.arch)
        self.spec = derive_spec(model, example_input(*task.arch))
        self.source = [init_state_dict(*task.arch, seed=0)]
        model.load_state_dict(self.source[0])
        self.source.append(sgd(model, self.train, task, 0))
        self.target = init_state_dict(*task.arch, seed=1)

    def wall(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def ensemble(self, targets: int, steps: int, overlap: bool) -> tuple[float, Timings]:
        """Wall seconds and timings of FGMT onto `targets` seeds, matchings overlapped or not."""
        options = TransferOptions(steps=steps, batch_size=128, device=self.device.type, overlap_matching=overlap)
        inits = [init_state_dict(*self.task.arch, seed=1 + k) for k in range(targets)]
        start = self.wall()
        result = transfer(build_model(*self.task.arch), self.spec, self.source, inits, self.train, options,
                          method=FGMT(), solver=get_solver(self.solver))
        return self.wall() - start, result.timings

    def fgmt(self, steps: int, match=None) -> Run:
        """One FGMT run; `match` replaces the engine's (main's, for the baseline)."""
        options = TransferOptions(steps=steps, batch_size=128, device=self.device.type)
        original = transfer_module.match
        timed_match = Timed(match or original, self.matching_clock)
        transfer_module.match = timed_match
        try:
            solver, solves = clocked_solver(self.main_solver if match else self.solver, self.matching_clock)
            start = self.clock()
            result = transfer(build_model(*self.task.arch), self.spec, self.source, [self.target],
                              self.train, options, method=FGMT(), solver=solver)
            total = self.clock() - start
        finally:
            transfer_module.match = original
        return Run(total, timed_match.seconds, solves.seconds, solves.calls, result.timings.backward_passes)

    def floor(self, steps: int) -> tuple[float, float]:
        """(seconds of 2·T bare backward passes, seconds of T cost-from-new-pair + solve per group)."""
        model = build_model(*self.task.arch).to(self.device)
        model.load_state_dict(self.target)
        model.train()
        sampler = BatchSampler(len(self.train), 128, torch.Generator().manual_seed(0))
        batches = [self.train.batch(sampler.draw(), self.device) for _ in range(2 * steps)]
        names = [n for n, _ in model.named_parameters()
                 if any(g is not None for g in self.spec.param_groups.get(n, ()))]
        gradients = []
        start = self.clock()
        for inputs, labels, _ in batches:
            model.zero_grad(set_to_none=True)
            CLASSES_OR_VALUES.loss(model(inputs), labels).backward()
            gradients.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if n in names})
        backward = self.clock() - start
        shapes = {n: tuple(g.shape) for n, g in gradients[0].items()}
        bank = PairBank.allocate(shapes, steps, self.device)
        costs = bank.costs(self.spec)
        solver_of, identity = bank.solvers(get_solver(self.solver)), self.spec.identity()
        groups = [g.name for g in self.spec.groups if any(a.param in names for a in g.axes)]
        start = self.clock()
        for step in range(steps):
            bank.add(gradients[2 * step], gradients[2 * step + 1])
            for group in groups:  # permutations unchanged: each cost gains the new pair only
                solver_of(group)(break_ties(costs.cost(group, identity)))
        return backward, self.clock() - start


def report(case: Case, steps: list[int], main_steps: set[int]) -> None:
    case.fgmt(2)  # warm-up: first calls into BLAS and the solver are slow
    unit = "wall s" if case.device.type == "cuda" else "CPU s"
    print(f"\n## {case.task.label}: FGMT vs its floor and vs main's matching, device {case.device}, "
          f"solver {case.solver} (main's: {case.main_solver}), {torch.get_num_threads()} thread(s), seconds are {unit}")
    print("| T | FGMT s | floor s (backward + matching) | FGMT / floor | matching s (costs + solves, "
          "solves) | main's matching s (costs + solves) | main / ours, matching | main / ours, costs |")
    print("|---|---|---|---|---|---|---|---|")
    matching_at: dict[int, tuple[float, float | None]] = {}
    for t in steps:
        ours = case.fgmt(t)
        backward, floor_matching = case.floor(t)
        floor = backward + floor_matching
        main = case.fgmt(t, main_matching.main_match) if t in main_steps else None
        matching_at[t] = (ours.matching, main.matching if main else None)
        main_cells = (f"{main.matching:.2f} ({main.costs:.2f} + {main.solves:.2f}) | "
                      f"{main.matching / ours.matching:.2f}× | {main.costs / ours.costs:.1f}×"
                      if main else "- | - | -")
        print(f"| {t} | {ours.total:.2f} | {floor:.2f} ({backward:.2f} + {floor_matching:.2f}) | "
              f"{ours.total / floor:.2f}× | {ours.matching:.2f} ({ours.costs:.2f} + {ours.solves:.2f}, "
              f"{ours.calls}) | {main_cells} |", flush=True)
    if 20 in matching_at and 80 in matching_at:
        ours_growth = matching_at[80][0] / matching_at[20][0]
        main_growth = (f"×{matching_at[80][1] / matching_at[20][1]:.1f}"
                       if matching_at[80][1] and matching_at[20][1] else "-")
        print(f"\nmatching seconds from T = 20 to T = 80: ours ×{ours_growth:.1f}, main's {main_growth}")


def report_overlap(case: Case, targets: int, steps: int) -> None:
    """FGMT onto an ensemble with each target's matching beside the next one's gradients, or not."""
    print(f"\n## {case.task.label}: ensemble of {targets} targets, T = {steps}, matching overlapped "
          f"with the next target's gradients or not, device {case.device}, seconds are wall s")
    print("| matching | wall s | gradient s | matching s | serial / overlapped |")
    print("|---|---|---|---|---|")
    walls = {}
    for overlap in (False, True):
        walls[overlap], timings = case.ensemble(targets, steps, overlap)
        ratio = f"{walls[False] / walls[True]:.2f}×" if overlap else "-"
        print(f"| {'overlapped' if overlap else 'serial'} | {walls[overlap]:.2f} | "
              f"{timings.gradient_seconds:.2f} | {timings.matching_seconds:.2f} | {ratio} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="10,20,40,80", help="values of T")
    parser.add_argument("--main-steps", default=None, help="T values that also run main's matching "
                        "(default: all of --steps)")
    parser.add_argument("--tasks", default="mlp,cnn", help="mlp,cnn")
    parser.add_argument("--solver", default="auto", help="LAP solver of FGMT and the floor "
                        "(auto = jv, warm-started; scipy; lapx)")
    parser.add_argument("--main-solver", default="scipy", help="LAP solver of main's matching (scipy, lapx)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--ensemble", type=int, default=4, help="targets of the overlap table (0: skip it)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    steps = [int(t) for t in args.steps.split(",")]
    main_steps = set(steps) if args.main_steps is None else {int(t) for t in args.main_steps.split(",") if t}
    device = resolve_device(args.device)
    for name in args.tasks.split(","):
        case = Case(FLOOR_TASKS[name], device, args.solver, args.main_solver)
        report(case, steps, main_steps)
        if args.ensemble:
            report_overlap(case, args.ensemble, 20)


if __name__ == "__main__":
    main()
