"""Linear assignment solvers for weight matching (maximisation, square cost matrices).

A solver maps a float64 cost matrix C (n x n) to `cols` with `cols[i]` = the column
assigned to row i, maximising Σ C[i, cols[i]]. Ties are broken by a tiny fixed
perturbation (see `break_ties`) so every exact solver returns the same assignment:
the choice of solver never changes a result, only its speed. `jv` (`WarmStarted`) is the
default: it starts each solve from the previous solution of the same group, and in groups of
1024 units or more it searches each row's 16 cheapest columns first (`candidate_lap`), still
exactly (docs/scale.md, "Large groups").
"""

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy.optimize import linear_sum_assignment

from trajx.engine.matching.warm_lap import WarmLap

try:
    import lap
except ImportError:  # lapx is optional: scipy alone still solves everything
    lap = None

Solver = Callable[[np.ndarray], np.ndarray]

# Relative size of the tie-breaking perturbation: far below any difference that matters
# for the objective, far above float64 rounding of sums of n entries.
_TIE_SCALE = 1e-9


@lru_cache(maxsize=64)
def _tie_pattern(n: int) -> np.ndarray:
    # Fixed per size (not per call) so the same problem always gets the same answer.
    pattern = np.random.default_rng(n).random((n, n))
    pattern.setflags(write=False)
    return pattern


def break_ties(cost: np.ndarray) -> np.ndarray:
    """Return `cost` plus a fixed pseudo-random perturbation that makes the optimum unique.

    Degenerate rows (e.g. dead units with zero gradients) otherwise admit many optimal
    assignments, and different solvers would pick different ones.
    """
    if cost.size == 0:
        return cost
    scale = max(float(cost.max()), -float(cost.min()))  # max |c| without an |c| copy
    if scale == 0.0:
        return cost
    tied = _tie_pattern(cost.shape[0]) * (_TIE_SCALE * scale)
    tied += cost  # one new array: these are n x n, 75 MB at n = 3072
    return tied


def scipy_solver(cost: np.ndarray) -> np.ndarray:
    """scipy.optimize.linear_sum_assignment (maximise)."""
    rows, cols = linear_sum_assignment(cost, maximize=True)
    return cols[np.argsort(rows)]


def lapx_solver(cost: np.ndarray) -> np.ndarray:
    """lapx's Jonker-Volgenant `lap.lapjv` (it minimises, so the cost is negated)."""
    _, cols, _ = lap.lapjv(np.ascontiguousarray(-cost))
    return np.asarray(cols, dtype=np.int64)


class WarmStarted:
    """The warm-started exact solver (`trajx.engine.matching.warm_lap.WarmLap`) as a solver choice.

    Called directly it solves one problem cold. Weight matching instead asks it for one
    `WarmLap` per permutation group (`sequence`), kept with the pair bank, so each solve
    starts from that group's previous solution: sweeps and steps after the first re-assign
    only the rows whose best column moved.
    """

    def __call__(self, cost: np.ndarray) -> np.ndarray:
        return WarmLap()(cost)

    @staticmethod
    def sequence() -> Solver:
        return WarmLap()


warm_started = WarmStarted()


def _available() -> dict[str, Solver]:
    solvers: dict[str, Solver] = {"jv": warm_started, "scipy": scipy_solver}
    if lap is not None:
        solvers["lapx"] = lapx_solver
    return solvers


SOLVERS: dict[str, Solver] = _available()


def get_solver(name: str) -> Solver:
    """The installed solver called `name` ("jv", "scipy" or "lapx"; "auto" is "jv", the
    fastest for weight matching's sequences of problems); ValueError if unavailable."""
    if name == "auto":
        return warm_started
    if name not in SOLVERS:
        raise ValueError(f"LAP solver {name!r} is not available; installed: {sorted(SOLVERS)}")
    return SOLVERS[name]
