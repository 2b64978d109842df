"""Transfer methods as small strategies (docs/design.md §1): where each target's permutation
starts and how a step updates it.

- `Naive`: π = identity throughout.
- `Oracle(trained)`: π matches the actual displacements θ₂ᵀ − θ₂⁰ of trained targets
  with θ₁ᵀ − θ₁⁰, once, before the first step (evaluation only).
- `FGMT`: each step adds one gradient pair (∇L(θ₂ˢ⁻¹), ∇L(θ₁ˢ⁻¹)) and re-solves the
  matching warm-started from π_{s-1}: to convergence at step 1, then at most
  `MatchingOptions.step_sweeps` sweeps a step.
- `GMT`: like FGMT, but every earlier target gradient is recomputed under the newest π.

A step is split in two so the run can overlap them across an ensemble: `prepare` does a
target's gradient work, `solve` its matching (on the bank `prepare` filled). A strategy
talks to the run through a small surface (gradients at target points, one
matching solve, source and target displacements), the `TransferRunView` protocol below;
`gmt.TransferRun` implements it, so this module does not import the loop.

The names and declared inputs are `trajx.method_registry`'s; `STRATEGIES` maps each name
to its strategy, built with the inputs its entry declares (Oracle: `trained`).
"""

from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

import torch

from trajx.engine.matching.descent import MatchResult, PairBank
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.spec import Permutation, PermutationSpec, StateDict

Tensors = dict[str, torch.Tensor]


class TransferRunView(Protocol):
    """What a strategy may use of the run it steps."""

    spec: PermutationSpec
    source: Sequence[StateDict]
    target_inits: list[Tensors]
    param_names: list[str]
    matched_names: list[str]
    device: torch.device
    params: TransferOptions

    def params_of(self, state: StateDict) -> Tensors:
        """`state`'s parameters as float32 on the run's device."""
        ...

    def source_delta(self, index: int) -> Tensors:
        """θ₁ⁱ − θ₁⁰ for source checkpoint `index`."""
        ...

    def target_gradient(self, k: int, perm: Permutation, t: int, store: Callable[[Tensors], None]) -> None:
        """The gradient at target k's point t under `perm`, handed to `store`."""
        ...

    def pair_target(self, k: int, perm: Permutation, t: int, store: Callable[[Tensors], None]) -> None:
        """The target side of pair t as a bank stores it (weighted as `params` says), handed to `store`."""
        ...

    def match(self, bank: PairBank, init: Permutation, k: int, sweeps: int | None = None) -> MatchResult:
        """Target k's weight matching of `bank`, warm-started from `init`, at most `sweeps` sweeps."""
        ...


class Method(Protocol):
    name: str
    uses_gradients: bool  # whether the run collects gradient pairs for `step`
    needs_groups: bool  # whether it matches anything (a spec without groups is refused)

    def initial_perms(self, run: TransferRunView) -> list[Permutation]:
        """One permutation per target before step 1."""
        ...

    def prepare(self, run: TransferRunView, bank: PairBank, k: int, perm: Permutation, step: int) -> None:
        """Target k's gradient work at `step`, on the run's thread."""
        ...

    def solve(self, run: TransferRunView, bank: PairBank, k: int, perm: Permutation) -> MatchResult | None:
        """Target k's matching after `prepare` (None: the permutation stays). May run on
        another thread, beside the next target's `prepare`: it reads only `bank`."""
        ...


class Naive:
    name, uses_gradients, needs_groups = "naive", False, False

    def initial_perms(self, run: TransferRunView) -> list[Permutation]:
        return [run.spec.identity() for _ in run.target_inits]

    def prepare(self, run: TransferRunView, bank: PairBank, k: int, perm: Permutation, step: int) -> None:
        return None

    def solve(self, run: TransferRunView, bank: PairBank, k: int, perm: Permutation) -> None:
        return None


class Oracle(Naive):
    name, needs_groups = "oracle", True

    def __init__(self, trained: Sequence[StateDict]) -> None:
        self.trained = trained

    def initial_perms(self, run: TransferRunView) -> list[Permutation]:
        if len(self.trained) != len(run.target_inits):
            raise ValueError("method 'oracle' needs one trained state per target")
        source_move = run.source_delta(len(run.source) - 1)
        perms = []
        for k, state in enumerate(self.trained):
            trained = run.params_of(state)
            target_move = {n: trained[n] - run.target_inits[k][n] for n in run.param_names}
            bank = PairBank.from_pairs([(target_move, source_move)], run.matched_names, run.device)
            perms.append(run.match(bank, run.spec.identity(), k).perm)
        return perms


class FGMT(Naive):
    name, uses_gradients, needs_groups = "fgmt", True, True

    def prepare(self, run: TransferRunView, bank: PairBank, k: int, perm: Permutation, step: int) -> None:
        """Add the newest pair."""
        run.pair_target(k, perm, step - 1, bank.add)

    def solve(self, run: TransferRunView, bank: PairBank, k: int, perm: Permutation) -> MatchResult:
        """Re-solve warm-started from `perm` (the first step, from the initial permutation,
        without the step cap)."""
        return run.match(bank, perm, k, None if len(bank) == 1 else run.params.matching.step_sweeps)


class GMT(FGMT):
    name = "gmt"

    def prepare(self, run: TransferRunView, bank: PairBank, k: int, perm: Permutation, step: int) -> None:
        """Recompute the earlier target gradients under `perm`, then as FGMT."""
        for t in range(step - 1):
            run.pair_target(k, perm, t, partial(bank.target.put, t))
        super().prepare(run, bank, k, perm, step)


# Name (trajx.method_registry.TRANSFER_METHODS) -> strategy; constructor arguments are the
# inputs the entry declares.
STRATEGIES: dict[str, type[Method]] = {cls.name: cls for cls in (FGMT, GMT, Naive, Oracle)}
