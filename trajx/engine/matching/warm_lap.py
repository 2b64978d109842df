"""An exact linear assignment solver that starts where its previous problem ended.

Weight matching solves the same group's assignment again and again: every sweep of the
coordinate descent after a neighbour moved, and every FGMT step after one more pair. The
new cost matrix is a small change of the last one, so most of the last solution still
holds. `WarmLap` keeps the last problem's column prices (LP duals) and assignment:

1. every row gets its price u_i = min_j (c_ij − v_j) under the kept column prices v, which
   makes every reduced cost c_ij − u_i − v_j ≥ 0 (dual feasible) whatever changed;
2. a row keeps its column when that column still attains the minimum (reduced cost 0); the
   others are freed, and a freed row takes its cheapest column when no kept row has it;
3. each row still free is assigned along a shortest augmenting path (Dijkstra on reduced
   costs, Jonker–Volgenant), updating prices so feasibility and slackness hold. For a
   large group the search looks at each row's few cheapest columns and reaches for the
   rest only when a bound says one of them might be next (`candidate_lap`): same paths.

At the end every row is assigned on a zero reduced cost with feasible duals: the assignment
is optimal, the same one scipy's `linear_sum_assignment` returns when the optimum is unique
(weight matching perturbs its costs so it is: `solvers.break_ties`). A first call (or one
after the size changed) is an ordinary cold solve; a call after a small change re-assigns
only the rows whose best column moved, at O(n²) for step 1 plus one path per freed row.

The kernels are compiled by numba, cached on disk after the first process compiles them.
"""

import numpy as np

from trajx.engine.matching.candidate_lap import augment_on_candidates, choose_candidates
from trajx.engine.matching.lap_common import compiled, settle_path


@compiled
def _row_minima(c: np.ndarray, v: np.ndarray, u: np.ndarray, cheapest: np.ndarray) -> None:
    """Step 1 above: u_i = min_j (c_ij − v_j), attained at column cheapest[i]."""
    n = c.shape[0]
    for i in range(n):
        best, arg = np.inf, 0
        for j in range(n):
            reduced = c[i, j] - v[j]
            if reduced < best:
                best, arg = reduced, j
        u[i], cheapest[i] = best, arg


@compiled
def _keep_or_take(c: np.ndarray, u: np.ndarray, v: np.ndarray, cheapest: np.ndarray,
                  col4row: np.ndarray, row4col: np.ndarray) -> None:
    """Step 2 above, in place: kept and greedily taken columns."""
    n = c.shape[0]
    row4col[:] = -1
    for i in range(n):
        j = col4row[i]
        if j >= 0 and c[i, j] - v[j] == u[i] and row4col[j] < 0:
            row4col[j] = i
        else:
            col4row[i] = -1
    for i in range(n):
        if col4row[i] < 0 and row4col[cheapest[i]] < 0:
            col4row[i] = cheapest[i]
            row4col[cheapest[i]] = i


@compiled
def _reduce_rows(c: np.ndarray, u: np.ndarray, v: np.ndarray, col4row: np.ndarray,
                 row4col: np.ndarray) -> None:
    """Step 3a, Jonker–Volgenant's augmenting row reduction: a free row takes its cheapest
    column, lowering that column's price until its second cheapest is as cheap (so both
    are tight), and the row it displaces is handled next. Each move is O(n); the bound on
    moves keeps near-equal prices from bidding against each other for long."""
    n = c.shape[0]
    moves, budget = 0, 2 * n
    free = np.empty(n + budget, dtype=np.int64)  # every row once, plus one per move at most
    count = 0
    for i in range(n):
        if col4row[i] < 0:
            free[count] = i
            count += 1
    k = 0
    while k < count and moves < budget:
        i = free[k]
        k += 1
        moves += 1
        first, second, j1, j2 = np.inf, np.inf, -1, -1
        for j in range(n):
            reduced = c[i, j] - v[j]
            if reduced < second:
                if reduced < first:
                    second, j2 = first, j1
                    first, j1 = reduced, j
                else:
                    second, j2 = reduced, j
        if j2 < 0:  # a single column: nothing to bid against
            second = first
        displaced = row4col[j1]
        if first < second:
            v[j1] -= second - first
        elif displaced >= 0:  # two equally cheap columns: take the one no row holds, if any
            j1, displaced = j2, row4col[j2]
        u[i] = second
        col4row[i], row4col[j1] = j1, i
        if displaced >= 0:
            col4row[displaced] = -1
            if first < second:
                k -= 1  # handle the displaced row right away
                free[k] = displaced
            else:
                free[count] = displaced
                count += 1


@compiled
def _augment(c: np.ndarray, u: np.ndarray, v: np.ndarray, col4row: np.ndarray,
             row4col: np.ndarray) -> int:
    """Step 3: assign every free row along a shortest augmenting path. Returns the
    number of paths (freed rows)."""
    n = c.shape[0]
    dist = np.empty(n)
    pred = np.empty(n, dtype=np.int64)
    done = np.empty(n, dtype=np.bool_)
    order = np.empty(n, dtype=np.int64)  # columns in the order Dijkstra finalised them
    paths = 0
    for root in range(n):
        if col4row[root] >= 0:
            continue
        paths += 1
        dist[:] = np.inf
        done[:] = False
        row, row_dist, finalised, sink, delta = root, 0.0, 0, -1, 0.0
        while sink < 0:
            for j in range(n):
                if not done[j]:
                    through = row_dist + c[row, j] - u[row] - v[j]
                    if through < dist[j]:
                        dist[j], pred[j] = through, row
            closest, best = -1, np.inf
            for j in range(n):
                # Among equally close columns a free one ends the search sooner.
                if not done[j] and (dist[j] < best or (dist[j] == best and row4col[j] < 0)):
                    closest, best = j, dist[j]
            done[closest] = True
            order[finalised] = closest
            finalised += 1
            if row4col[closest] < 0:
                sink, delta = closest, best
            else:
                row, row_dist = row4col[closest], best
        settle_path(u, v, col4row, row4col, dist, pred, order, finalised, root, sink, delta)
    return paths


# Candidate columns per row for groups above CANDIDATE_MIN_UNITS (see `candidate_lap`); both
# chosen from `bench/bench_large_groups.py` (docs/scale.md, "Large groups").
CANDIDATES_PER_ROW = 16
CANDIDATE_MIN_UNITS = 1024


class WarmLap:
    """Exact maximising assignment for a sequence of related n x n problems.

    Call it like a `trajx.engine.matching.solvers` solver (`cols[i]` is row i's column); it keeps
    the last call's prices and assignment to start the next. One instance per sequence
    (per permutation group of one matching): a problem of another size starts cold.
    Groups of `min_units` units or more search for augmenting paths over each row's
    `candidates` cheapest columns first (`candidate_lap`): the same answer, faster;
    candidates=0 scans every column always.
    """

    def __init__(self, candidates: int = CANDIDATES_PER_ROW,
                 min_units: int = CANDIDATE_MIN_UNITS) -> None:
        if candidates < 0:
            raise ValueError(f"candidates per row must be >= 0, got {candidates}")
        self.candidates = candidates
        self.min_units = min_units
        self._prices: np.ndarray | None = None
        self._cols: np.ndarray | None = None
        self.solves = 0
        self.paths = 0  # augmenting paths found over all calls (a cold solve needs up to n)
        self.row_scans = 0  # rows scanned in full by candidate searches (their bound was reached)

    def __call__(self, cost: np.ndarray) -> np.ndarray:
        if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
            raise ValueError(f"WarmLap solves square problems, got shape {cost.shape}")
        if not np.isfinite(cost).all():
            raise ValueError("cost matrix holds a NaN or an infinity")
        self.solves += 1
        n = cost.shape[0]
        minimise = np.ascontiguousarray(-cost, dtype=np.float64)
        if self._prices is None or self._prices.shape[0] != n:
            self._prices = np.zeros(n)
            self._cols = np.full(n, -1, dtype=np.int64)
        v, cols = self._prices, self._cols
        u = np.empty(n)
        cheapest = np.empty(n, dtype=np.int64)
        row4col = np.empty(n, dtype=np.int64)
        sparse = n >= self.min_units and n > self.candidates > 0
        if sparse:  # chosen before prices fall (step 3a): their bounds stay lower bounds
            candidates = choose_candidates(minimise, v, self.candidates, u, cheapest)
        else:
            _row_minima(minimise, v, u, cheapest)
        _keep_or_take(minimise, u, v, cheapest, cols, row4col)
        _reduce_rows(minimise, u, v, cols, row4col)
        if sparse:
            paths, scans = augment_on_candidates(minimise, candidates, u, v, cols, row4col)
            self.row_scans += scans
        else:
            paths = _augment(minimise, u, v, cols, row4col)
        self.paths += paths
        return cols.copy()
