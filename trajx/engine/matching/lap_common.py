"""What the dense and the candidate shortest-augmenting-path searches share (`warm_lap`,
`candidate_lap`): numba compilation, and the price update along a path found."""

import numpy as np
from numba import njit


def compiled(kernel):
    """`kernel` compiled to run without the GIL, cached where numba finds a writable place
    (next to this file, NUMBA_CACHE_DIR, the user's cache); with none, compiled per process."""
    try:
        return njit(cache=True, nogil=True)(kernel)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(nogil=True)(kernel)


@compiled
def settle_path(u: np.ndarray, v: np.ndarray, col4row: np.ndarray, row4col: np.ndarray,
                dist: np.ndarray, pred: np.ndarray, order: np.ndarray, finalised: int, root: int,
                sink: int, delta: float) -> None:
    """After Dijkstra from free row `root` finalised `order[:finalised]` (the last, `sink`, a
    free column at distance `delta`): update prices so reduced costs stay ≥ 0 and the path's
    edges become 0, then flip the path so root and sink are assigned."""
    u[root] += delta
    for k in range(finalised - 1):
        j = order[k]
        u[row4col[j]] += delta - dist[j]
        v[j] -= delta - dist[j]
    j = sink
    while True:
        i = pred[j]
        row4col[j] = i
        j, col4row[i] = col4row[i], j
        if i == root:
            break
