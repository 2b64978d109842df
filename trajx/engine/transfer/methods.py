"""Transfer methods as small strategies (DESIGN.md §1): where each target's permutation
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
talks to the run through `TransferRun`'s small surface (gradients at target points, one
matching solve, source and target displacements).
"""

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Protocol

from trajx.engine.matching.descent import MatchResult, PairBank
from trajx.engine.permutation.spec import Permutation, StateDict

if TYPE_CHECKING:
    from trajx.engine.transfer.gmt import TransferRun


class Method(Protocol):
    name: str
    uses_gradients: bool  # whether the run collects gradient pairs for `step`
    needs_groups: bool  # whether it matches anything (a spec without groups is refused)

    def initial_perms(self, run: "TransferRun") -> list[Permutation]:
        """One permutation per target before step 1."""
        ...

    def prepare(self, run: "TransferRun", bank: PairBank, k: int, perm: Permutation, step: int) -> None:
        """Target k's gradient work at `step`, on the run's thread."""
        ...

    def solve(self, run: "TransferRun", bank: PairBank, k: int, perm: Permutation) -> MatchResult | None:
        """Target k's matching after `prepare` (None: the permutation stays). May run on
        another thread, beside the next target's `prepare`: it reads only `bank`."""
        ...


class Naive:
    name, uses_gradients, needs_groups = "naive", False, False

    def initial_perms(self, run: "TransferRun") -> list[Permutation]:
        return [run.spec.identity() for _ in run.target_inits]

    def prepare(self, run: "TransferRun", bank: PairBank, k: int, perm: Permutation, step: int) -> None:
        return None

    def solve(self, run: "TransferRun", bank: PairBank, k: int, perm: Permutation) -> None:
        return None


class Oracle(Naive):
    name, needs_groups = "oracle", True

    def __init__(self, trained: Sequence[StateDict]) -> None:
        self.trained = trained

    def initial_perms(self, run: "TransferRun") -> list[Permutation]:
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

    def prepare(self, run: "TransferRun", bank: PairBank, k: int, perm: Permutation, step: int) -> None:
        """Add the newest pair."""
        run.target_gradient(k, perm, step - 1, bank.add)

    def solve(self, run: "TransferRun", bank: PairBank, k: int, perm: Permutation) -> MatchResult:
        """Re-solve warm-started from `perm` (the first step, from the initial permutation,
        without the step cap)."""
        return run.match(bank, perm, k, None if len(bank) == 1 else run.params.matching.step_sweeps)


class GMT(FGMT):
    name = "gmt"

    def prepare(self, run: "TransferRun", bank: PairBank, k: int, perm: Permutation, step: int) -> None:
        """Recompute the earlier target gradients under `perm`, then as FGMT."""
        for t in range(step - 1):
            run.target_gradient(k, perm, t, partial(bank.target.put, t))
        super().prepare(run, bank, k, perm, step)
