"""Weight matching: the permutation π maximising Σ_pairs ⟨target, π source⟩.

Pairs are tensor dicts (gradients for GMT/FGMT, displacements for the oracle) kept in a
`PairBank`, stacked along a leading pair axis. `match` runs coordinate descent over
permutation groups (Git Re-Basin weight matching): each group in turn is set to the
solution of one linear assignment problem with every other group held fixed. The cost
matrices come from the bank's `GroupCosts`, which updates them with the pairs and the
permutation moves since the last solve instead of rebuilding them (see group_costs.py).
"""

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np
import torch

from trajx.engine.matching.costs import GroupCosts
from trajx.engine.matching.solvers import Solver, WarmStarted, break_ties, warm_started
from trajx.engine.permutation.spec import Permutation, PermutationGroup, PermutationSpec, StateDict

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class GradientStack:
    """Up to `capacity` tensor dicts with fixed names and shapes, stacked per name.

    Storage is allocated once (`capacity` x every shape), so adding a pair never
    copies the earlier ones. `stacked(name)` is a view of the filled slots.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], capacity: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self._slots = {name: torch.zeros((capacity, *shape), device=device, dtype=dtype)
                       for name, shape in shapes.items()}
        self.capacity = capacity
        self.count = 0
        self.overwrites = 0  # sums kept over the stack are stale once a slot is overwritten

    def __len__(self) -> int:
        return self.count

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._slots)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._slots.values())

    def append(self, tensors: StateDict) -> None:
        """Store `tensors` (needs every name of the stack) in the next free slot."""
        if self.count == self.capacity:
            raise ValueError(f"gradient stack is full ({self.capacity} slots)")
        self._write(self.count, tensors)
        self.count += 1

    def put(self, index: int, tensors: StateDict) -> None:
        """Overwrite slot `index` (GMT recomputes earlier pairs under a new permutation)."""
        self._write(index, tensors)
        self.overwrites += 1

    def _write(self, index: int, tensors: StateDict) -> None:
        for name, slot in self._slots.items():
            slot[index].copy_(tensors[name])

    def stacked(self, name: str, count: int | None = None) -> torch.Tensor:
        """The first `count` (default: all filled) slots of `name`: shape [count, *shape]."""
        return self._slots[name][: self.count if count is None else count]


class PairBank:
    """(target, source) pairs for matching, one stack per side.

    The source stack may be shared by the banks of several targets (an ensemble sees
    the same source gradients); a bank holds as many pairs as its target stack. It also
    keeps the cost matrices matched on it so far (`costs`), so the next solve after a
    new pair costs that pair's work, not all pairs' again.
    """

    def __init__(self, target: GradientStack, source: GradientStack) -> None:
        if set(target.names) != set(source.names):
            raise ValueError("target and source stacks hold different tensors")
        self.target = target
        self.source = source
        self._costs: tuple[tuple[int, int], GroupCosts] | None = None
        self._group_solvers: dict[str, Solver] = {}

    @classmethod
    def allocate(cls, shapes: Mapping[str, tuple[int, ...]], capacity: int,
                 device: torch.device | str = "cpu", dtype: str = "float32",
                 source: GradientStack | None = None) -> "PairBank":
        """A bank for `capacity` pairs of tensors named and shaped as in `shapes`.

        `dtype` is a TransferParams.pair_dtype name; pass `source` to share a stack.
        """
        torch_dtype = _DTYPES[dtype]
        target = GradientStack(shapes, capacity, device, torch_dtype)
        if source is None:
            source = GradientStack(shapes, capacity, device, torch_dtype)
        return cls(target, source)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[StateDict, StateDict]], names: Iterable[str],
                   device: torch.device | str = "cpu") -> "PairBank":
        """A float32 bank holding `pairs` of (target, source) dicts restricted to `names`."""
        pairs = list(pairs)
        names = list(names)
        shapes = {n: tuple(pairs[0][0][n].shape) for n in names}
        bank = cls.allocate(shapes, len(pairs), device)
        for target, source in pairs:
            bank.add(target, source)
        return bank

    def __len__(self) -> int:
        return len(self.target)

    @property
    def names(self) -> tuple[str, ...]:
        return self.target.names

    @property
    def nbytes(self) -> int:
        """Bytes held by this bank (a shared source stack counted in full)."""
        return self.target.nbytes + self.source.nbytes

    def add(self, target: StateDict, source: StateDict | None = None) -> None:
        """Append one pair; leave `source` None when it was appended to a shared stack."""
        if source is not None:
            self.source.append(source)
        self.target.append(target)
        if len(self.target) > len(self.source):
            raise ValueError("pair added without its source side")

    def pair_stacks(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, source) stacks of `name`, each [pairs, *shape]."""
        count = len(self)
        return self.target.stacked(name, count), self.source.stacked(name, count)

    def costs(self, spec: PermutationSpec) -> GroupCosts:
        """The cost matrices of `spec`'s groups on these pairs, kept from earlier solves
        while pairs were only appended (a fresh set after an overwrite or another spec)."""
        revision = (self.target.overwrites, self.source.overwrites)
        if self._costs is None or self._costs[0] != revision or self._costs[1].spec is not spec:
            self._costs = (revision, GroupCosts(spec, self))
        return self._costs[1]

    def solvers(self, solver: Solver) -> Callable[[str], Solver]:
        """Group -> the solver of its assignments: `solver` itself, or for a warm-started
        one each group's own, kept here so the next matching on this bank starts from this
        one's solutions (any previous solution is a valid start, even after an overwrite)."""
        if not isinstance(solver, WarmStarted):
            return lambda group: solver

        def of_group(group: str) -> Solver:
            if group not in self._group_solvers:
                self._group_solvers[group] = solver.sequence()
            return self._group_solvers[group]
        return of_group


@dataclass
class MatchResult:
    """The permutation found and the objective Σ⟨target, π source⟩ before and after each sweep."""

    perm: Permutation
    objectives: list[float]

    @property
    def sweeps(self) -> int:
        return len(self.objectives) - 1


def match(spec: PermutationSpec, pairs: PairBank, init: Permutation | None = None, *,
          max_iter: int = 100, tol: float = 1e-7, generator: torch.Generator | None = None,
          solver: Solver = warm_started, workers: int | None = None) -> MatchResult:
    """Maximise Σ_pairs ⟨target, π source⟩ over permutations π of `spec`'s groups.

    Coordinate descent: each sweep visits the groups in an order drawn from `generator`
    and replaces a group's permutation by the optimal assignment with the others fixed
    (only when strictly better). A group is re-solved only when a group sharing a
    parameter with it changed since its last solve (otherwise its cost matrix, hence its
    answer, is the same). Stops when a sweep improves the objective by less than `tol`
    relative, when nothing is left to re-solve, or after `max_iter` sweeps. `init`
    warm-starts the search (default: identity). Cost matrices are computed on the pairs'
    device in float64 and kept on the bank for the next call, the assignment on CPU by
    `solver` (the caller's choice; a warm-started one keeps each group's last solution on
    the bank too), independent large groups on up to `workers` threads (see `descend`).
    Raises ValueError for an empty bank.
    """
    if len(pairs) == 0:
        raise ValueError("weight matching needs at least one pair")
    return descend(spec, pairs.names, pairs.costs(spec), init or spec.identity(), pairs.solvers(solver),
                   max_iter=max_iter, tol=tol, generator=generator, workers=workers)


class CostSource(Protocol):
    """Where `descend` gets cost matrices and objectives (GroupCosts, or a baseline)."""

    def cost(self, group: str, perm: Permutation) -> np.ndarray: ...

    def objective(self, perm: Permutation) -> float: ...

    def remember_objective(self, perm: Permutation, value: float) -> None: ...


def descend(spec: PermutationSpec, names: tuple[str, ...], costs: CostSource, init: Permutation,
            solver_of: Callable[[str], Solver], *, max_iter: int, tol: float,
            generator: torch.Generator | None, workers: int | None = None) -> MatchResult:
    """The coordinate descent of `match` over the parameters `names`, costs from `costs`,
    each group's assignments solved by `solver_of(group)`.

    Large groups that follow one another in a sweep and share no parameter (a transformer's
    MLP and head groups) do not see each other's permutations, so their assignments are
    solved together on up to `workers` threads (default: torch's thread count): the same
    answers as one by one, in less wall time on a worker with idle cores.
    """
    perm = {g: p.detach().to("cpu", torch.int64).clone() for g, p in init.items()}
    involved = [g for g in spec.groups if any(a.param in names for a in g.axes)]
    neighbours = _neighbours(spec, names)
    stale = {g.name for g in involved}
    objectives = [costs.objective(perm)]
    workers = max(1, workers or torch.get_num_threads())
    with _SolvePool(workers) as pool:
        for _ in range(max_iter):
            gain = 0.0
            order = [involved[i] for i in torch.randperm(len(involved), generator=generator).tolist()]
            start = 0
            while True:
                batch, start = _next_batch(order, start, stale, neighbours, workers)
                if not batch:
                    break
                stale.difference_update(g.name for g in batch)
                problems = [costs.cost(g.name, perm) for g in batch]
                answers = pool.solve([solver_of(g.name) for g in batch], problems)
                for group, cost, cols in zip(batch, problems, answers, strict=True):
                    rows = np.arange(group.size)
                    old = cost[rows, perm[group.name].numpy()].sum()
                    new = cost[rows, cols].sum()
                    if new > old:
                        perm[group.name] = torch.from_numpy(np.asarray(cols, dtype=np.int64))
                        # The objective changes by exactly the gain on this group's cost matrix.
                        gain += new - old
                        stale |= neighbours[group.name]
            objectives.append(objectives[-1] + float(gain))
            if not stale or gain <= tol * abs(objectives[-2]):
                break
    costs.remember_objective(perm, objectives[-1])
    return MatchResult(perm, objectives)


# Groups at least this large are solved beside other ones; a smaller solve takes less time
# than handing it to a thread.
_PARALLEL_MIN_SIZE = 256


def _next_batch(order: list[PermutationGroup], start: int, stale: set[str],
                neighbours: Mapping[str, set[str]], limit: int) -> tuple[list[PermutationGroup], int]:
    """The groups of `order[start:]` to solve next, together, and where the sweep goes on.

    Stale groups in sweep order, skipping those not stale: one small group alone, or up to
    `limit` large ones none of which shares a parameter with another. A group sharing one
    with the batch ends it, stale or not: whether it must be re-solved depends on the
    batch's answers.
    """
    batch: list[PermutationGroup] = []
    while start < len(order):
        group = order[start]
        if any(group.name in neighbours[member.name] for member in batch):
            break
        if group.name in stale:
            alone = group.size < _PARALLEL_MIN_SIZE
            if batch and (alone or len(batch) == limit):
                break
            batch.append(group)
            if alone:
                return batch, start + 1
        start += 1
    return batch, start


class _SolvePool:
    """Solves a batch of assignment problems, on threads when there are several (the
    solvers release the GIL); threads are started only when first needed."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown()

    def solve(self, solvers: list[Solver], problems: list[np.ndarray]) -> list[np.ndarray]:
        if len(problems) > 1 and self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="trajx-solve")
        run = self._executor.map if len(problems) > 1 else map
        return list(run(_solve_tied, solvers, problems))


def _solve_tied(solver: Solver, cost: np.ndarray) -> np.ndarray:
    return solver(break_ties(cost))


def _neighbours(spec: PermutationSpec, names: tuple[str, ...]) -> dict[str, set[str]]:
    """Group -> groups whose permutation enters its cost matrix (sharing a parameter)."""
    neighbours: dict[str, set[str]] = {g.name: set() for g in spec.groups}
    for name in names:
        groups = [g for g in spec.param_groups.get(name, ()) if g is not None]
        for i, group in enumerate(groups):
            neighbours[group] |= {h for j, h in enumerate(groups) if j != i}
    return neighbours
