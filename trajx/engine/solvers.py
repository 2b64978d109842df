"""Linear assignment solvers for weight matching (maximisation, square cost matrices).

A solver maps a float64 cost matrix C (n x n) to `cols` with `cols[i]` = the column
assigned to row i, maximising Σ C[i, cols[i]]. Ties are broken by a tiny fixed
perturbation (see `break_ties`) so every exact solver returns the same assignment:
the choice of solver never changes a result, only its speed.
"""

import time
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy.optimize import linear_sum_assignment

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
    scale = float(np.abs(cost).max(initial=0.0))
    if scale == 0.0:
        return cost
    return cost + (_TIE_SCALE * scale) * _tie_pattern(cost.shape[0])


def scipy_solver(cost: np.ndarray) -> np.ndarray:
    """scipy.optimize.linear_sum_assignment (maximise)."""
    rows, cols = linear_sum_assignment(cost, maximize=True)
    return cols[np.argsort(rows)]


def lapx_solver(cost: np.ndarray) -> np.ndarray:
    """lapx's Jonker-Volgenant `lap.lapjv` (it minimises, so the cost is negated)."""
    _, cols, _ = lap.lapjv(np.ascontiguousarray(-cost))
    return np.asarray(cols, dtype=np.int64)


class FastestSolver:
    """Times every candidate on the first problems of each size, then keeps the fastest.

    Results do not depend on which one wins (ties are broken before solving), so the
    measurement only changes speed. One instance per process is enough.
    """

    def __init__(self, candidates: dict[str, Solver], trials: int = 3) -> None:
        self.candidates = candidates
        self.trials = trials
        self._seconds: dict[int, dict[str, float]] = {}
        self._trials_done: dict[int, int] = {}
        self._winner: dict[int, str] = {}

    def chosen(self, n: int) -> str | None:
        """Name of the solver picked for size n, or None while still measuring."""
        return self._winner.get(n)

    def __call__(self, cost: np.ndarray) -> np.ndarray:
        n = cost.shape[0]
        if n in self._winner:
            return self.candidates[self._winner[n]](cost)
        seconds = self._seconds.setdefault(n, dict.fromkeys(self.candidates, 0.0))
        result = None
        for name, solve in self.candidates.items():
            start = time.perf_counter()
            result = solve(cost)
            seconds[name] += time.perf_counter() - start
        self._trials_done[n] = self._trials_done.get(n, 0) + 1
        if self._trials_done[n] >= self.trials:
            self._winner[n] = min(seconds, key=seconds.get)
        return result


def _available() -> dict[str, Solver]:
    solvers: dict[str, Solver] = {"scipy": scipy_solver}
    if lap is not None:
        solvers["lapx"] = lapx_solver
    return solvers


SOLVERS: dict[str, Solver] = _available()


def get_solver(name: str) -> Solver:
    """The installed solver called `name` ("scipy" or "lapx"); ValueError if unavailable.
    ("auto", a FastestSolver over SOLVERS, is kept by whoever runs many matchings.)"""
    if name not in SOLVERS:
        raise ValueError(f"LAP solver {name!r} is not available; installed: {sorted(SOLVERS)}")
    return SOLVERS[name]
