"""Where the T steps of a transfer sit on the source trajectory.

Only the checkpoints θ⁰ … θᴷ are stored; step j lies on segment k at fraction λ between
θᵏ and θᵏ⁺¹. The T steps are split over the K segments as evenly as possible (earlier
segments get the remainder) and each segment is walked with its own schedule, so a
trajectory of T+1 checkpoints with T steps visits every checkpoint exactly.
"""

import math
from dataclasses import dataclass
from typing import Literal

ScheduleName = Literal["uniform", "cosine"]


def schedule(name: ScheduleName, steps: int) -> list[float]:
    """λ₀ … λ_T on [0, 1]: λ₀ = 0, λ_T = 1, non-decreasing.

    `uniform`: λⱼ = j/T. `cosine`: λⱼ ∝ Σ_{t<j} (1 + cos(πt/T)), big steps first.
    Raises ValueError for an unknown name or steps < 1.
    """
    if steps < 1:
        raise ValueError(f"a schedule needs at least one step, got {steps}")
    if name == "uniform":
        return [j / steps for j in range(steps + 1)]
    if name == "cosine":
        increments = [1.0 + math.cos(math.pi * t / steps) for t in range(steps)]
        total = sum(increments)
        cumulative = [0.0]
        for inc in increments:
            cumulative.append(cumulative[-1] + inc)
        return [c / total for c in cumulative[:-1]] + [1.0]
    raise ValueError(f"unknown schedule {name!r}; use 'uniform' or 'cosine'")


@dataclass(frozen=True)
class TrajectoryPoint:
    """Step j of the transfer: θ = θᵏ + λ (θᵏ⁺¹ − θᵏ) with k = `segment`."""

    segment: int
    fraction: float


def plan_trajectory(name: ScheduleName, steps: int, checkpoints: int) -> list[TrajectoryPoint]:
    """T+1 points (step 0 = first checkpoint, step T = last) over `checkpoints` ≥ 2.

    Raises ValueError when there are fewer steps than segments (a checkpoint would be
    skipped) or fewer than two checkpoints.
    """
    segments = checkpoints - 1
    if segments < 1:
        raise ValueError(f"a trajectory needs at least 2 checkpoints, got {checkpoints}")
    if steps < segments:
        raise ValueError(
            f"{steps} steps cannot visit {checkpoints} checkpoints; use steps >= {segments}"
        )
    points = [TrajectoryPoint(0, 0.0)]
    for k in range(segments):
        per_segment = steps // segments + (1 if k < steps % segments else 0)
        points += [TrajectoryPoint(k, lam) for lam in schedule(name, per_segment)[1:]]
    return points
