"""numba compilation for the assignment kernels (`warm_lap`, `candidate_lap`)."""

from numba import njit


def compiled(kernel):
    """`kernel` compiled to run without the GIL, cached where numba finds a writable place
    (next to this file, NUMBA_CACHE_DIR, the user's cache); with none, compiled per process."""
    try:
        return njit(cache=True, nogil=True)(kernel)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(nogil=True)(kernel)
