"""The warm-started exact assignment solver: same answers as scipy, cold or warm."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trajx.engine.matching.solvers import break_ties, scipy_solver
from trajx.engine.matching.warm_lap import WarmLap


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), rank=st.integers(1, 6))
def test_cold_solves_match_scipy(n, seed, rank):
    rng = np.random.default_rng(seed)
    # Low rank makes many near-ties; break_ties leaves one optimum, which both must find.
    cost = break_ties(rng.standard_normal((n, rank)) @ rng.standard_normal((rank, n)))
    assert np.array_equal(WarmLap()(cost), scipy_solver(cost))


@pytest.mark.parametrize("make", [WarmLap, lambda: WarmLap(candidates=4, min_units=0)],
                         ids=["dense", "candidates"])
@pytest.mark.parametrize("change", [1e-6, 1e-2, 1.0, 100.0])
def test_a_sequence_of_changing_problems_matches_scipy_at_every_step(change, make):
    # Each problem starts from the previous one's prices and assignment, small or large change.
    rng = np.random.default_rng(1)
    n = 64
    cost = rng.standard_normal((n, 8)) @ rng.standard_normal((8, n))
    solver = make()
    for _ in range(25):
        cost = cost + change * rng.standard_normal((n, n))
        tied = break_ties(cost)
        assert np.array_equal(solver(tied), scipy_solver(tied))


def test_a_repeated_problem_is_answered_without_a_search():
    rng = np.random.default_rng(2)
    cost = break_ties(rng.standard_normal((50, 50)))
    solver = WarmLap()
    first = solver(cost)
    paths = solver.paths
    assert np.array_equal(solver(cost), first)
    assert solver.paths == paths  # every row kept its column: no augmenting path


def test_small_changes_free_few_rows():
    rng = np.random.default_rng(3)
    n = 200
    cost = rng.standard_normal((n, 16)) @ rng.standard_normal((16, n))
    solver = WarmLap()
    solver(break_ties(cost))
    cold = solver.paths
    solver(break_ties(cost + 1e-3 * rng.standard_normal((n, n))))
    assert solver.paths - cold < cold / 4


def test_a_new_size_starts_cold_and_degenerate_costs_agree():
    solver = WarmLap()
    solver(break_ties(np.random.default_rng(4).standard_normal((10, 10))))
    cost = np.zeros((12, 12))
    cost[:, 3] = 1.0  # every row prefers one column; the rest is a tie broken by break_ties
    assert np.array_equal(solver(break_ties(cost)), scipy_solver(break_ties(cost)))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 4)), "square"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
])
def test_bad_problems_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        WarmLap()(bad)


def test_without_a_writable_cache_the_solver_is_compiled_in_the_process():
    # numba refuses cache=True when it finds no writable place; the solver must still load.
    code = (
        "import numba.core.caching as caching\n"
        "caching.CacheImpl._locator_classes = []\n"
        "import numpy as np\n"
        "from trajx.engine.matching.warm_lap import WarmLap, _row_minima\n"
        "from trajx.engine.matching.solvers import break_ties, scipy_solver\n"
        "assert _row_minima._cache.__class__.__name__ == 'NullCache'\n"
        "cost = break_ties(np.random.default_rng(0).standard_normal((30, 30)))\n"
        "assert (WarmLap()(cost) == scipy_solver(cost)).all()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
