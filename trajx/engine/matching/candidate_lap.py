"""Shortest augmenting paths for large groups: each row's few cheapest columns, the rest on demand.

`warm_lap._augment` runs Dijkstra over all n columns: every column it finalises costs two
scans of n. For a 3072-unit group most of those columns can never be on a shortest path:
under the prices the search starts from, a row's optimal column is among its few cheapest.
`augment_on_candidates` does the same Jonker–Volgenant augmentation, exactly, with

1. candidates: row i's k cheapest columns by c_ij − v_j (costs gathered, so a row's scan
   reads k numbers), and τ_i, the next cheapest: a lower bound for c_ij − v_j on every
   column left out. It stays one, because column prices v only fall during augmentation;
2. a heap-ordered Dijkstra that relaxes a reached row's candidates only, and holds one
   stand-in entry for the row's other columns at the least distance any of them could
   have, row_dist + τ_i − u_i. Only when that stand-in is the closest entry (so one of those
   columns might be next) is the row scanned in full; its candidates and τ_i are then chosen
   again under the current prices, for the searches that follow.

A column is finalised only when no entry, real or stand-in, is closer, so the search
finalises the same columns at the same distances as the dense one: the paths, prices and
answer are the dense solver's (up to the order among exactly equal distances), not an
approximation. The work is k per reached row plus n
per row whose bound the path actually reaches.

Costs are minimised here (the caller negates), like `warm_lap`'s kernels.
"""

from typing import NamedTuple

import numpy as np

from trajx.engine.matching.lap_common import compiled, settle_path


@compiled
def _keep_cheapest(best: np.ndarray, best_col: np.ndarray, filled: int, value: float,
                   col: int) -> int:
    """Insert (value, col) into the sorted buffer of the cheapest len(best) seen; returns
    how many it holds. Most values fail the first comparison."""
    size = best.shape[0]
    if filled == size and value >= best[size - 1]:
        return filled
    slot = filled if filled < size else size - 1
    while slot > 0 and best[slot - 1] > value:
        best[slot], best_col[slot] = best[slot - 1], best_col[slot - 1]
        slot -= 1
    best[slot], best_col[slot] = value, col
    return filled + 1 if filled < size else filled


@compiled
def _candidates(c: np.ndarray, v: np.ndarray, k: int, u: np.ndarray, cheapest: np.ndarray):
    """(cols, costs, bound): each row's k cheapest columns by c_ij − v_j (k < n) and their
    c_ij, and the (k+1)-th cheapest c_ij − v_j, which no column left out undercuts. Fills
    u and cheapest with each row's least c_ij − v_j and its column on the way."""
    n = c.shape[0]
    cols = np.empty((n, k), dtype=np.int64)
    costs = np.empty((n, k))
    bound = np.empty(n)
    best = np.empty(k + 1)
    best_col = np.empty(k + 1, dtype=np.int64)
    for i in range(n):
        filled = 0
        for j in range(n):
            filled = _keep_cheapest(best, best_col, filled, c[i, j] - v[j], j)
        for s in range(k):
            cols[i, s] = best_col[s]
            costs[i, s] = c[i, best_col[s]]
        bound[i] = best[k]
        u[i], cheapest[i] = best[0], best_col[0]
    return cols, costs, bound


class Candidates(NamedTuple):
    """Each row's k cheapest columns (cols, their costs) and a lower bound on the rest."""
    cols: np.ndarray
    costs: np.ndarray
    bound: np.ndarray


def choose_candidates(c: np.ndarray, v: np.ndarray, k: int, u: np.ndarray,
                      cheapest: np.ndarray) -> Candidates:
    """Step 1 above under column prices v (0 < k < n); also each row's least reduced cost
    into u and its column into cheapest (what `warm_lap` needs to start from)."""
    return Candidates(*_candidates(c, v, k, u, cheapest))


def augment_on_candidates(c: np.ndarray, candidates: Candidates, u: np.ndarray, v: np.ndarray,
                          col4row: np.ndarray, row4col: np.ndarray) -> tuple[int, int]:
    """`warm_lap._augment` by the Dijkstra above, in place (candidates are refreshed where a
    row is scanned in full). Prices may only have fallen since the candidates were chosen.
    Returns (augmenting paths, full row scans)."""
    return _augment_on_candidates(c, candidates.cols, candidates.costs, candidates.bound, u, v,
                                  col4row, row4col)


@compiled
def _sift_up(keys: np.ndarray, items: np.ndarray, where: np.ndarray, slot: int) -> None:
    key, item = keys[slot], items[slot]
    while slot > 0:
        parent = (slot - 1) // 2
        if keys[parent] <= key:
            break
        keys[slot], items[slot] = keys[parent], items[parent]
        where[items[slot]] = slot
        slot = parent
    keys[slot], items[slot] = key, item
    where[item] = slot


@compiled
def _offer(keys: np.ndarray, items: np.ndarray, where: np.ndarray, size: int, item: int,
           key: float) -> int:
    """Insert `item` at `key`, or lower its key if it is already in the heap; returns the size."""
    slot = where[item]
    if slot < 0:
        slot, size = size, size + 1
    elif keys[slot] <= key:
        return size
    keys[slot], items[slot] = key, item
    _sift_up(keys, items, where, slot)
    return size


@compiled
def _take(keys: np.ndarray, items: np.ndarray, where: np.ndarray, size: int) -> int:
    """Remove the root (the caller read it first); returns the new size."""
    where[items[0]] = -1
    size -= 1
    if size == 0:
        return 0
    key, item = keys[size], items[size]
    slot = 0
    while True:
        child = 2 * slot + 1
        if child >= size:
            break
        if child + 1 < size and keys[child + 1] < keys[child]:
            child += 1
        if keys[child] >= key:
            break
        keys[slot], items[slot] = keys[child], items[child]
        where[items[slot]] = slot
        slot = child
    keys[slot], items[slot] = key, item
    where[item] = slot
    return size


@compiled
def _augment_on_candidates(c: np.ndarray, cand_cols: np.ndarray, cand_costs: np.ndarray,
                           bound: np.ndarray, u: np.ndarray, v: np.ndarray,
                           col4row: np.ndarray, row4col: np.ndarray):
    """`warm_lap._augment` with the Dijkstra above. Returns (paths, full row scans)."""
    n = c.shape[0]
    k = cand_cols.shape[1]
    dist = np.full(n, np.inf)
    pred = np.empty(n, dtype=np.int64)
    done = np.zeros(n, dtype=np.bool_)
    order = np.empty(n, dtype=np.int64)  # columns in the order Dijkstra finalised them
    reached = np.empty(n, dtype=np.int64)  # columns given a distance, to reset them
    # Heap items: column j is j, row i's stand-in for its other columns is n + i.
    keys = np.empty(2 * n)
    items = np.empty(2 * n, dtype=np.int64)
    where = np.full(2 * n, -1, dtype=np.int64)
    row_dists = np.empty(n)
    best = np.empty(k + 1)
    best_col = np.empty(k + 1, dtype=np.int64)
    paths, scans = 0, 0
    for root in range(n):
        if col4row[root] >= 0:
            continue
        paths += 1
        row, row_dist, finalised, count, size, sink, delta = root, 0.0, 0, 0, 0, -1, 0.0
        while sink < 0:
            if row >= 0:  # a row just reached: its candidates, and its stand-in
                for s in range(k):
                    j = cand_cols[row, s]
                    if done[j]:
                        continue
                    through = row_dist + cand_costs[row, s] - u[row] - v[j]
                    if through < dist[j]:
                        if dist[j] == np.inf:
                            reached[count] = j
                            count += 1
                        dist[j], pred[j] = through, row
                        size = _offer(keys, items, where, size, j, through)
                row_dists[row] = row_dist
                size = _offer(keys, items, where, size, n + row, row_dist + bound[row] - u[row])
            item = items[0]
            size = _take(keys, items, where, size)
            if item >= n:  # a stand-in came first: scan that row in full
                scans += 1
                row = -1
                i = item - n
                filled = 0
                for j in range(n):
                    filled = _keep_cheapest(best, best_col, filled, c[i, j] - v[j], j)
                    if done[j]:
                        continue
                    through = row_dists[i] + c[i, j] - u[i] - v[j]  # the dense search's sum
                    if through < dist[j]:
                        if dist[j] == np.inf:
                            reached[count] = j
                            count += 1
                        dist[j], pred[j] = through, i
                        size = _offer(keys, items, where, size, j, through)
                # Prices moved since row i's candidates were chosen: choose them again.
                for s in range(k):
                    cand_cols[i, s] = best_col[s]
                    cand_costs[i, s] = c[i, best_col[s]]
                bound[i] = best[k]
                continue
            done[item] = True
            order[finalised] = item
            finalised += 1
            if row4col[item] < 0:
                sink, delta = item, dist[item]
            else:
                row, row_dist = row4col[item], dist[item]
        settle_path(u, v, col4row, row4col, dist, pred, order, finalised, root, sink, delta)
        for s in range(size):  # what the search left in the heap
            where[items[s]] = -1
        for s in range(count):
            dist[reached[s]] = np.inf
            done[reached[s]] = False
    return paths, scans
