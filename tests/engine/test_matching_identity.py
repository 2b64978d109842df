"""Incremental cost matrices (issues 15, 29) change speed, not what is solved.

`GroupCosts` updates cost matrices with new pairs and moved units instead of rebuilding
them, from float32 products summed in float64; these tests compare it with a rebuild, with
float64 sums and with the cost matrices of main before issue 15 (bench/main_matching.py:
float32, rebuilt on every solve), within the float32 error bound `product_error_bound`.
Whole runs are no longer bit-identical to earlier revisions (issue 29's product decision:
docs/scale.md holds the quality table that replaced that check).
"""

import threading

import pytest
import torch

from bench.main_matching import MainCosts
from tests.support.engine_setups import _setup
from trajx.engine.matching import costs as group_costs
from trajx.engine.matching import descent as matching
from trajx.engine.matching.costs import GroupCosts, product_error_bound
from trajx.engine.matching.descent import PairBank
from trajx.engine.matching.solvers import scipy_solver
from trajx.engine.options import MatchingOptions, TransferOptions
from trajx.engine.permutation.spec import apply_permutation, spec_from_param_groups
from trajx.engine.transfer.gmt import transfer
from trajx.engine.transfer.methods import FGMT

TRANSFORMER = {"d_model": 16, "num_heads": 2, "num_layers": 1, "image_size": 8, "patch_size": 2,
               "in_channels": 1}
# A conv (4 channels) flattened into a Linear: a repeated axis, and a group on 3 params;
# a fused q/k/v-like projection holds group h tiled 3 times, 2 features per unit; a second
# conv links c and d across unpermuted kernel axes; an embedding-like table permuted on c
# alone: with the conv, c's permutation-free terms hold more than 4² elements per pair, so
# they are kept apart.
CONV_GROUPS = {
    "emb.weight": (None, "c"), "conv.weight": ("c", None, None, None), "conv.bias": ("c",),
    "fc.weight": ("h", "c*9"), "fc.bias": ("h",), "out.weight": (None, "h"),
    "qkv.weight": ("3*h*2", "c"), "conv2.weight": ("d", "c", None, None),
}
CONV_SHAPES = {"emb.weight": (50, 4), "conv.weight": (4, 2, 3, 3), "conv.bias": (4,), "fc.weight": (6, 36),
               "fc.bias": (6,), "out.weight": (3, 6), "qkv.weight": (36, 4), "conv2.weight": (5, 4, 3, 3)}


def objective(spec, bank, perm):
    """Σ_pairs ⟨target, π source⟩ in float64, pair by pair."""
    total = 0.0
    for index in range(len(bank)):
        target = {n: bank.pair_stacks(n)[0][index].double() for n in bank.names}
        source = apply_permutation(spec, perm, {n: bank.pair_stacks(n)[1][index].double() for n in bank.names})
        total += sum(float((target[n] * source[n]).sum()) for n in bank.names)
    return total


# float32 rounding of a sum of k products: γ_k = k·u / (1 − k·u) of the sum of their magnitudes
def _gamma(k: int) -> float:
    return k * 2.0**-24 / (1 - k * 2.0**-24)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_float32_products_stay_within_their_error_bound_of_float64(device):
    # Long sums with heavy cancellation (zero-mean terms, a few large ones): the worst case
    # for relative error, so the bound is what keeps the difference small, not luck.
    generator = torch.Generator().manual_seed(0)
    target, source = (torch.randn(64, 20_000, generator=generator) for _ in range(2))
    target[:, ::97] *= 1e3
    exact = target.double() @ source.double().T
    product = (target.to(device) @ source.to(device).T).cpu().double()
    bound = product_error_bound(target, source)
    assert (abs(product - exact) <= bound).all()
    assert abs(product - exact).max() > 0  # float32 did round: the comparison is not vacuous
    assert bound.max() < 1e-2 * (target.double().abs() @ source.double().abs().T).max()


# Elements per piece of a pair stack: the default (whole pairs), or so few that every pair is
# cut along a free axis, permuted or not (as an embedding is).
@pytest.mark.parametrize("chunk", [None, 8, 40])
def test_updated_costs_equal_a_rebuild_as_pairs_arrive_and_units_move(chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(group_costs, "_CHUNK_ELEMENTS", chunk)
    generator = torch.Generator().manual_seed(0)
    spec = spec_from_param_groups(CONV_GROUPS, CONV_SHAPES)
    bank = PairBank.allocate(CONV_SHAPES, capacity=6)
    kept = GroupCosts(spec, bank)
    perm = spec.identity()
    for step in range(6):
        bank.add(*[{n: torch.randn(s, generator=generator) for n, s in CONV_SHAPES.items()}
                   for _ in range(2)])
        # A few units move (updated on the moved units) or most of them (rebuilt).
        group = ("h", "c", "d")[step % 3]
        size = perm[group].numel()
        moved = torch.randperm(size, generator=generator)[: 2 if step < 4 else size]
        perm[group] = perm[group].clone()
        perm[group][moved] = perm[group][moved[torch.randperm(len(moved), generator=generator)]]
        magnitudes = GroupCosts(spec, _absolute(bank, CONV_SHAPES))
        exact_objective = objective(spec, bank, perm)
        # Each entry sums at most every element of every pair; the bound covers any split.
        gamma = _gamma(len(bank) * sum(torch.Size(s).numel() for s in CONV_SHAPES.values()))
        for name in ("c", "h", "d"):
            updated, rebuilt = kept.cost(name, perm), GroupCosts(spec, bank).cost(name, perm)
            bound = 1.01 * gamma * magnitudes.cost(name, perm)
            assert (abs(updated - rebuilt) <= 2 * bound).all(), (step, name)
            main = MainCosts(spec, bank).cost(name, perm)
            assert abs(updated - main).max() <= 1e-5 * abs(main).max(), (step, name)
            # Moving group `name` to π' changes the objective by Σ_i C[i, π'(i)] − C[i, π(i)]:
            # checked against the objective summed in float64 pair by pair.
            other = {**perm, name: torch.randperm(perm[name].numel(), generator=generator)}
            change = objective(spec, bank, other) - exact_objective
            rows = torch.arange(perm[name].numel())
            assert abs(updated[rows, other[name]].sum() - updated[rows, perm[name]].sum() - change) <= \
                bound[rows, other[name]].sum() + bound[rows, perm[name]].sum()
        fresh = GroupCosts(spec, bank).objective(perm)
        assert fresh == pytest.approx(exact_objective, rel=1e-5)
        if step % 3 == 0:  # carried over from the value reached, plus the new pairs
            kept.remember_objective(perm, fresh)
            assert kept.objective(perm) == pytest.approx(fresh, rel=1e-6)


def test_a_rebuild_reuses_the_permutation_free_terms_kept_apart(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    spec = spec_from_param_groups(CONV_GROUPS, CONV_SHAPES)
    bank = PairBank.allocate(CONV_SHAPES, capacity=3)
    kept, perm = GroupCosts(spec, bank), spec.identity()
    products = []
    add_products = GroupCosts._add_products
    monkeypatch.setattr(GroupCosts, "_add_products",
                        lambda self, sums, term, *a: products.append((term.param, *a[1:])) or
                        add_products(self, sums, term, *a))
    for step in range(3):
        bank.add(*[{n: torch.randn(s, generator=generator) for n, s in CONV_SHAPES.items()}
                   for _ in range(2)])
        perm = {**perm, "d": torch.randperm(5, generator=generator)}  # c's neighbour: all of it moves
        products.clear()
        updated = kept.cost("c", perm)
        # The embedding's products are made once per pair, never again on a rebuild.
        assert [p for p in products if p[0] == "emb.weight"] == [("emb.weight", step, step + 1)]
        assert ("conv2.weight", 0, step) in products or step == 0  # the neighbour's term was rebuilt
        assert torch.allclose(torch.from_numpy(updated.copy()),
                              torch.from_numpy(GroupCosts(spec, bank).cost("c", perm).copy()), rtol=1e-5, atol=1e-5)


def _absolute(bank: PairBank, shapes) -> PairBank:
    """A bank of |pairs|: its cost matrices are the Σ|target||source| of the error bound."""
    absolute = PairBank.allocate(shapes, capacity=len(bank))
    for index in range(len(bank)):
        absolute.add(*({n: bank.pair_stacks(n)[side][index].abs() for n in bank.names} for side in (0, 1)))
    return absolute


def test_overwriting_a_pair_starts_the_costs_afresh():
    spec = spec_from_param_groups(CONV_GROUPS, CONV_SHAPES)
    bank = PairBank.allocate(CONV_SHAPES, capacity=2)
    ones = {n: torch.ones(s) for n, s in CONV_SHAPES.items()}
    bank.add(ones, ones)
    before = bank.costs(spec)
    assert bank.costs(spec) is before
    first = before.cost("h", spec.identity())
    bank.target.put(0, {n: 2 * t for n, t in ones.items()})
    after = bank.costs(spec)
    assert after is not before
    assert (after.cost("h", spec.identity()) == 2 * first).all()


def test_solving_independent_groups_on_threads_changes_no_transfer(monkeypatch):
    # A transformer's head and MLP groups share parameters only with the residual stream:
    # solved together on threads (every group counts as large here), the run is the same.
    monkeypatch.setattr(matching, "_PARALLEL_MIN_SIZE", 1)
    setup = _setup(("transformer", {**TRANSFORMER, "num_layers": 3}), True, 2, 0.01)
    threads = set()

    def recording_scipy(cost):
        threads.add(threading.current_thread().name)
        return scipy_solver(cost)

    runs = []
    for solve_threads in (1, 4):
        params = TransferOptions(steps=6, batch_size=128, device="cpu", seed=3,
                                 matching=MatchingOptions(solve_threads=solve_threads))
        runs.append(transfer(setup.model(), setup.spec, setup.source, [setup.init(1)], setup.train, params,
                             method=FGMT(), solver=recording_scipy))
    assert any(name.startswith("trajx-solve") for name in threads)
    serial, threaded = (r.targets[0] for r in runs)
    assert all(torch.equal(serial.permutation[g], threaded.permutation[g]) for g in serial.permutation)
    assert all(torch.equal(serial.last[n], threaded.last[n]) for n in serial.last)
    assert [s["objective"] for s in serial.steps] == [s["objective"] for s in threaded.steps]
