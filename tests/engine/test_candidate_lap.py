"""The candidate search for large groups: the exact optimum, as scipy's, cold and warm."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trajx.engine.matching.candidate_lap import choose_candidates
from trajx.engine.matching.solvers import break_ties, scipy_solver
from trajx.engine.matching.warm_lap import CANDIDATE_MIN_UNITS, WarmLap


def _low_rank(rng: np.random.Generator, n: int, rank: int) -> np.ndarray:
    return rng.standard_normal((n, rank)) @ rng.standard_normal((rank, n))


@settings(max_examples=80, deadline=None)
@given(n=st.integers(3, 60), k=st.integers(1, 8), seed=st.integers(0, 2**32 - 1),
       rank=st.integers(1, 6))
def test_cold_solves_over_few_candidates_match_scipy(n, k, seed, rank):
    # Few candidates per row on small problems: most paths need columns left out.
    cost = break_ties(_low_rank(np.random.default_rng(seed), n, rank))
    solver = WarmLap(candidates=min(k, n - 1), min_units=0)
    assert np.array_equal(solver(cost), scipy_solver(cost))


def test_an_optimum_outside_every_rows_candidates_is_found_by_full_scans():
    # c_ij = a_i·b_j (maximised): every row's cheapest columns are the same few big-b ones,
    # so nearly every row's optimal column is one no candidate list holds at the start.
    rng = np.random.default_rng(6)
    n, k = 200, 4
    cost = break_ties(np.outer(rng.random(n) + 1, rng.random(n) + 1) + 0.01 * rng.random((n, n)))
    exact = scipy_solver(cost)
    u, cheapest = np.empty(n), np.empty(n, dtype=np.int64)
    first = choose_candidates(np.ascontiguousarray(-cost), np.zeros(n), k, u, cheapest)
    outside = [exact[i] not in first.cols[i] for i in range(n)]
    assert np.mean(outside) > 0.9
    solver = WarmLap(candidates=k, min_units=0)
    assert np.array_equal(solver(cost), exact)
    assert solver.row_scans > 0


def test_the_bound_is_not_reached_when_the_candidates_hold_the_answer():
    # A planted permutation far above everything else: each row's best column is its answer.
    rng = np.random.default_rng(7)
    n = 400
    truth = rng.permutation(n)
    cost = rng.random((n, n))
    cost[np.arange(n), truth] += 10.0
    solver = WarmLap(candidates=8, min_units=0)
    assert np.array_equal(solver(break_ties(cost)), truth)
    assert solver.row_scans == 0


def test_large_groups_use_candidates_by_default_and_agree_with_the_dense_search():
    rng = np.random.default_rng(8)
    n = CANDIDATE_MIN_UNITS
    cost = _low_rank(rng, n, 16) + rng.standard_normal((n, n))
    default, dense = WarmLap(), WarmLap(candidates=0)
    for _ in range(2):  # cold, then warm after a change
        tied = break_ties(cost)
        exact = scipy_solver(tied)
        assert np.array_equal(default(tied), exact)
        assert np.array_equal(dense(tied), exact)
        cost = cost + 0.5 * rng.standard_normal((n, n))
    assert default.row_scans > 0 and dense.row_scans == 0
    # The same augmenting paths, found another way: same count, same prices to the bit.
    assert default.paths == dense.paths
    assert np.array_equal(default._prices, dense._prices)


def test_groups_below_the_size_keep_the_dense_search():
    rng = np.random.default_rng(9)
    n = 200
    cost = break_ties(np.outer(rng.random(n) + 1, rng.random(n) + 1) + 0.01 * rng.random((n, n)))
    default, forced = WarmLap(), WarmLap(min_units=0)
    assert np.array_equal(default(cost), forced(cost))
    assert default.row_scans == 0 and forced.row_scans > 0


def test_a_negative_number_of_candidates_is_refused():
    with pytest.raises(ValueError, match="candidates per row"):
        WarmLap(candidates=-1)
