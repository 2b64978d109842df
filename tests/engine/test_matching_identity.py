"""Incremental cost matrices (issue 15) change speed, not results.

`GroupCosts` updates cost matrices with new pairs and moved units instead of rebuilding
them; these tests compare it with a rebuild, and whole FGMT/GMT runs with the cost
matrices of main before the change (bench/main_matching.py: float32, rebuilt on every
solve) and its cold scipy solves, against today's default warm-started `jv` solver: same
permutations, bit-identical checkpoints.
"""

import threading

import pytest
import torch

from bench.main_matching import MainCosts, main_match
from tests.support.engine_setups import CNN, MLP, _setup
from trajx.engine.matching import costs as group_costs
from trajx.engine.matching import descent as matching
from trajx.engine.matching.costs import GroupCosts
from trajx.engine.matching.descent import PairBank
from trajx.engine.matching.solvers import scipy_solver
from trajx.engine.options import MatchingOptions, TransferOptions
from trajx.engine.permutation.spec import apply_permutation, spec_from_param_groups
from trajx.engine.transfer import gmt as transfer_module
from trajx.engine.transfer.gmt import transfer
from trajx.engine.transfer.methods import FGMT, STRATEGIES

TRANSFORMER = {"d_model": 16, "num_heads": 2, "num_layers": 1, "image_size": 8, "patch_size": 2,
               "in_channels": 1}
SETUPS = {"mlp": (MLP, False, 10, 0.005), "cnn": (CNN, True, 2, 0.02),
          "transformer": (("transformer", TRANSFORMER), True, 2, 0.01),
          "transformer-fused-qkv": (("transformer", {**TRANSFORMER, "attention": "fused"}), True, 2, 0.01)}

# A conv (4 channels) flattened into a Linear: a repeated axis, and a group on 3 params;
# a fused q/k/v-like projection holds group h tiled 3 times, 2 features per unit; a second
# conv links c and d across unpermuted kernel axes.
CONV_GROUPS = {
    "conv.weight": ("c", None, None, None), "conv.bias": ("c",),
    "fc.weight": ("h", "c*9"), "fc.bias": ("h",), "out.weight": (None, "h"),
    "qkv.weight": ("3*h*2", "c"), "conv2.weight": ("d", "c", None, None),
}
CONV_SHAPES = {"conv.weight": (4, 2, 3, 3), "conv.bias": (4,), "fc.weight": (6, 36),
               "fc.bias": (6,), "out.weight": (3, 6), "qkv.weight": (36, 4), "conv2.weight": (5, 4, 3, 3)}


def objective(spec, bank, perm):
    """Σ_pairs ⟨target, π source⟩ in float64, pair by pair."""
    total = 0.0
    for index in range(len(bank)):
        target = {n: bank.pair_stacks(n)[0][index].double() for n in bank.names}
        source = apply_permutation(spec, perm, {n: bank.pair_stacks(n)[1][index].double() for n in bank.names})
        total += sum(float((target[n] * source[n]).sum()) for n in bank.names)
    return total


@pytest.fixture(scope="module", params=sorted(SETUPS))
def setup(request):
    return _setup(*SETUPS[request.param])


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
        for name in ("c", "h", "d"):
            updated, rebuilt = kept.cost(name, perm), GroupCosts(spec, bank).cost(name, perm)
            assert abs(updated - rebuilt).max() <= 1e-12 * abs(rebuilt).max(), (step, name)
            main = MainCosts(spec, bank).cost(name, perm)
            assert abs(updated - main).max() <= 1e-5 * abs(main).max(), (step, name)
        fresh = GroupCosts(spec, bank).objective(perm)
        assert fresh == pytest.approx(objective(spec, bank, perm), rel=1e-12)
        if step % 3 == 0:  # carried over from the value reached, plus the new pairs
            kept.remember_objective(perm, fresh)
            assert kept.objective(perm) == pytest.approx(fresh, rel=1e-12)


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


@pytest.mark.slow
@pytest.mark.parametrize(("method", "steps"), [("fgmt", 12), ("gmt", 4)])
def test_transfer_gives_main_s_permutations_and_checkpoints(setup, method, steps, monkeypatch):
    params = TransferOptions(steps=steps, batch_size=128, device="cpu", seed=3)
    inits = [setup.init(seed) for seed in (1, 2)]

    def run():
        return transfer(setup.model(), setup.spec, setup.source, inits, setup.train, params,
                        method=STRATEGIES[method](), eval_data=setup.test)

    new = run()  # the default solver: warm-started jv, its state kept per bank and group
    # main: costs rebuilt on every solve, every assignment solved cold by scipy
    monkeypatch.setattr(transfer_module, "match",
                        lambda *args, solver, **kwargs: main_match(*args, solver=scipy_solver, **kwargs))
    main = run()
    for ours, theirs in zip(new.targets, main.targets, strict=True):
        assert ours.permutation.keys() == theirs.permutation.keys()
        for group, perm in ours.permutation.items():
            assert torch.equal(perm, theirs.permutation[group]), group
        assert ours.best_step == theirs.best_step
        for state, other in ((ours.last, theirs.last), (ours.best, theirs.best)):
            assert all(torch.equal(state[n], other[n]) for n in state)
        assert [s["sweeps"] for s in ours.steps] == [s["sweeps"] for s in theirs.steps]
        for step, other in zip(ours.steps, theirs.steps):
            assert step["objective"] == pytest.approx(other["objective"], rel=1e-5)


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
