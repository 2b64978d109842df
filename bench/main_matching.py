"""The cost matrices of weight matching as main computed them before issue 15 (2ab33d2).

Every solve rebuilt its group's cost over all pairs kept so far, in float32, permuting
the whole pair stack with `index_select`. Kept as the baseline that bench_floor.py times
and as the reference that tests/engine/test_matching_identity.py compares permutations
with. `main_match` is `trajx.engine.matching.descent.match` with these costs plugged in (the
coordinate descent itself is unchanged since 2ab33d2). Not used by the service.
"""

import math

import numpy as np
import torch

from trajx.engine.matching.descent import MatchResult, PairBank, descend
from trajx.engine.matching.solvers import Solver, get_solver
from trajx.engine.permutation.spec import Permutation, PermutationSpec, expand_index

# Up to this many leading slices, a matmul per slice beats copying the stack (see _unit_products).
_LOOP_LEAD = 256


def main_match(spec: PermutationSpec, pairs: PairBank, init: Permutation | None = None, *,
               max_iter: int = 100, tol: float = 1e-7, generator: torch.Generator | None = None,
               solver: Solver | str = "scipy", workers: int | None = None) -> MatchResult:
    """`match` as on main: same arguments, same descent, costs rebuilt on every solve.
    `solver` is the solver itself (as `match` takes it) or a name of `get_solver`; it is
    called cold on every problem, as main's solvers were. `workers` is the descent's (main
    had none; it changes wall time only)."""
    if len(pairs) == 0:
        raise ValueError("weight matching needs at least one pair")
    solve = get_solver(solver) if isinstance(solver, str) else solver
    return descend(spec, pairs.names, MainCosts(spec, pairs), init or spec.identity(), lambda group: solve,
                   max_iter=max_iter, tol=tol, generator=generator, workers=workers)


class MainCosts:
    """A CostSource that recomputes everything, as main did."""

    def __init__(self, spec: PermutationSpec, pairs: PairBank) -> None:
        self.spec = spec
        self.pairs = pairs

    def cost(self, group: str, perm: Permutation) -> np.ndarray:
        return _group_cost(self.spec, self.pairs, perm, group)

    def objective(self, perm: Permutation) -> float:
        return _objective(self.spec, self.pairs, perm)

    def remember_objective(self, perm: Permutation, value: float) -> None:
        pass


def _permute_except(spec: PermutationSpec, perm: Permutation, name: str,
                    stack: torch.Tensor, skip_dim: int | None) -> torch.Tensor:
    # stack is [pairs, *shape]: parameter axis d is stack axis d + 1.
    for dim, group in enumerate(spec.param_groups.get(name, ())):
        if group is not None and dim != skip_dim:
            # main's gather: torch.index_select on the stack as it is (see permspec.select_along).
            index = expand_index(perm[group], spec.repeat(name, dim), spec.tile(name, dim))
            stack = torch.index_select(stack, dim + 1, index.to(stack.device))
    return stack


def _group_cost(spec: PermutationSpec, pairs: PairBank, perm: Permutation,
                group_name: str) -> np.ndarray:
    """C[i, j] = Σ_pairs Σ_axes ⟨target unit i, source unit j⟩, other groups applied."""
    cost = None
    for axis in spec.group(group_name).axes:
        if axis.param not in pairs.names:
            continue
        target, source = pairs.pair_stacks(axis.param)
        source = _permute_except(spec, perm, axis.param, source, axis.dim)
        # A tiled axis (fused q/k/v) as (tile, units * repeat): its copies add up like a batch.
        target, source = (t.unflatten(axis.dim + 1, (axis.tile, -1)) for t in (target, source))
        # n is the group's unit count: a flattened axis holds each unit's block of features.
        term = _unit_products(target, source, axis.dim + 2, perm[group_name].numel())
        cost = term if cost is None else cost + term
    return cost.double().cpu().numpy()


def _unit_products(target: torch.Tensor, source: torch.Tensor, dim: int, units: int) -> torch.Tensor:
    """[units, units]: Σ over every index except axis `dim` of target[.., i, ..] * source[.., j, ..].

    Both stacks are viewed as [lead, units, rest] without copying. Only when `lead` is
    large and `rest` is not trivial (a conv's input axis) is each pair copied, one at a
    time, so the extra memory stays at one pair's tensor whatever the number of pairs.
    """
    lead = math.prod(target.shape[:dim])
    a, b = target.reshape(lead, units, -1), source.reshape(lead, units, -1)
    if a.shape[2] == 1:  # biases, norms, a Linear's input axis: one matmul over `lead`
        return a[:, :, 0].float().T @ b[:, :, 0].float()
    cost = torch.zeros(units, units, device=a.device)
    if lead <= _LOOP_LEAD:  # e.g. output axes: one matmul per slice, accumulated in place
        for k in range(lead):
            cost.addmm_(a[k].float(), b[k].float().T)
        return cost
    for pair_a, pair_b in zip(target, source):  # [..., n, ...] -> [n, rest], one pair at a time
        cost.addmm_(pair_a.movedim(dim - 1, 0).reshape(units, -1).float(),
                    pair_b.movedim(dim - 1, 0).reshape(units, -1).float().T)
    return cost


def _objective(spec: PermutationSpec, pairs: PairBank, perm: Permutation) -> float:
    total = 0.0
    for name in pairs.names:
        target, source = pairs.pair_stacks(name)
        source = _permute_except(spec, perm, name, source, None)
        total += float(torch.dot(target.reshape(-1).float(), source.reshape(-1).float()))
    return total
