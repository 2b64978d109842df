"""The engine's own options for a transfer: plain dataclasses, no service model.

The defaults follow the paper's FGMT setup (the job spec's `params` carry the same
names; the transfer executor converts one into the other).
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MatchingOptions:
    """Coordinate descent over permutation groups: at most `max_iter` sweeps, stop when the
    objective improves by less than `tol` (relative). A transfer's steps after its first
    start from the previous step's permutation, one pair away from its optimum, and run at
    most `step_sweeps` sweeps (None, the default: until converged, as the first; 2 kept the
    MLP and CNN within noise but lost FGMT's lead over Naive on an attention model, see
    docs/scale.md). Independent large groups are solved on up to `solve_threads` threads at
    once (None: torch's thread count); results are the same for any value."""

    max_iter: int = 100
    tol: float = 1e-7
    step_sweeps: int | None = None
    solve_threads: int | None = None


@dataclass(frozen=True)
class TransferOptions:
    """T = `steps` points on the trajectory (`schedule`: uniform or cosine), G = `grad_batches`
    batches of `batch_size` per gradient, `bn_batches` batches to re-estimate BatchNorm
    statistics, every draw from `seed`. FGMT/GMT keep their gradient pairs on `pair_device`
    ("auto": the run's device) in `pair_dtype`; `device` is "auto", "cpu" or "cuda". With
    `overlap_matching`, an ensemble's matching of target k (assignment solves on the CPU)
    runs on a second thread while target k+1's gradients are computed; results are the
    same either way.

    `pair_weighting` "unit" scales every gradient pair to unit norms (the matching then sums
    cosines, so the small gradients late on a trajectory count as much as the early ones;
    docs/pretrained.md)."""

    steps: int = 30
    schedule: str = "cosine"
    batch_size: int = 128
    grad_batches: int = 1
    bn_batches: int = 5
    seed: int = 0
    matching: MatchingOptions = field(default_factory=MatchingOptions)
    pair_device: str = "auto"
    pair_dtype: str = "float32"
    device: str = "auto"
    overlap_matching: bool = True
    pair_weighting: str = "none"
