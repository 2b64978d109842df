"""Weight matching: planted permutations are recovered, solvers agree, banks stack pairs."""

import threading

import numpy as np
import pytest
import torch

from trajx.engine.matching import descent as matching
from trajx.engine.matching.descent import GradientStack, PairBank, match
from trajx.engine.matching.solvers import SOLVERS, WarmStarted, break_ties, get_solver, scipy_solver
from trajx.engine.permutation.spec import apply_permutation, invert, spec_from_param_groups

MLP_GROUPS = {
    "l1.weight": ("h1", None), "l1.bias": ("h1",),
    "l2.weight": ("h2", "h1"), "l2.bias": ("h2",),
    "l3.weight": (None, "h2"), "l3.bias": (None,),
}


def random_mlp_state(generator: torch.Generator, width: int = 24) -> dict[str, torch.Tensor]:
    shapes = {"l1.weight": (width, 8), "l1.bias": (width,), "l2.weight": (width, width),
              "l2.bias": (width,), "l3.weight": (3, width), "l3.bias": (3,)}
    return {n: torch.randn(s, generator=generator) for n, s in shapes.items()}


@pytest.fixture
def planted():
    generator = torch.Generator().manual_seed(0)
    source = random_mlp_state(generator)
    spec = spec_from_param_groups(MLP_GROUPS, {n: tuple(t.shape) for n, t in source.items()})
    perm = spec.random(generator)
    target = apply_permutation(spec, perm, source)
    return spec, perm, source, target


@pytest.mark.parametrize("solver", sorted(SOLVERS) + ["auto"])
def test_match_recovers_a_planted_permutation_exactly(planted, solver):
    spec, perm, source, target = planted
    bank = PairBank.from_pairs([(target, source)], source)
    result = match(spec, bank, generator=torch.Generator().manual_seed(1), solver=get_solver(solver))
    for group, expected in perm.items():
        assert torch.equal(result.perm[group], expected), group
    assert result.objectives[-1] == pytest.approx(sum(float((t * t).sum()) for t in source.values()))


def test_match_recovers_a_planted_permutation_from_several_gradient_like_pairs(planted):
    spec, perm, _, _ = planted
    generator = torch.Generator().manual_seed(5)
    pairs = []
    for _ in range(4):
        source = random_mlp_state(generator)
        pairs.append((apply_permutation(spec, perm, source), source))
    bank = PairBank.from_pairs(pairs, pairs[0][1])
    result = match(spec, bank, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(result.perm[g], p) for g, p in perm.items())


def test_objectives_never_decrease_and_warm_start_at_the_optimum_stops_at_once(planted):
    spec, perm, source, target = planted
    bank = PairBank.from_pairs([(target, source)], source)
    cold = match(spec, bank, generator=torch.Generator().manual_seed(3))
    assert all(b >= a for a, b in zip(cold.objectives, cold.objectives[1:]))
    warm = match(spec, bank, init=perm, generator=torch.Generator().manual_seed(3))
    assert warm.sweeps == 1 and warm.objectives[0] == warm.objectives[-1]


def test_apply_then_invert_round_trips(planted):
    spec, perm, source, target = planted
    back = apply_permutation(spec, invert(perm), target)
    assert all(torch.equal(back[n], source[n]) for n in source)


def test_solvers_agree_on_degenerate_costs():
    # Rows of zeros (dead units) tie many assignments; every solver must pick the same one.
    rng = np.random.default_rng(0)
    cost = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 40))
    cost[::3] = 0.0
    answers = {name: tuple(solve(break_ties(cost))) for name, solve in SOLVERS.items()}
    assert len(set(answers.values())) == 1, answers


def test_auto_is_the_warm_started_solver_and_the_bank_keeps_one_per_group(planted):
    spec, _, source, target = planted
    assert isinstance(get_solver("auto"), WarmStarted)
    bank = PairBank.from_pairs([(target, source)], source)
    match(spec, bank, generator=torch.Generator().manual_seed(1), solver=get_solver("jv"))
    solver_of = bank.solvers(get_solver("jv"))
    assert solver_of("h1") is solver_of("h1") and solver_of("h1") is not solver_of("h2")
    assert solver_of("h1").solves > 0  # the matching above solved through the kept solver
    assert bank.solvers(SOLVERS["scipy"])("h1") is SOLVERS["scipy"]


def test_unknown_solver_is_refused_by_name():
    with pytest.raises(ValueError, match="'hungarian'"):
        get_solver("hungarian")


def test_stack_is_preallocated_and_shared_sources_serve_several_banks():
    shapes = {"w": (3, 2)}
    first = PairBank.allocate(shapes, capacity=2)
    second = PairBank.allocate(shapes, capacity=2, source=first.source)
    ones, twos = {"w": torch.ones(3, 2)}, {"w": torch.full((3, 2), 2.0)}
    first.source.append(ones)
    first.add(twos)
    second.add(ones)
    assert len(first) == len(second) == 1
    assert torch.equal(second.pair_stacks("w")[1][0], ones["w"])
    assert first.nbytes == 2 * 2 * 6 * 4
    with pytest.raises(ValueError, match="without its source"):
        second.add(twos)


def test_bfloat16_pairs_still_match(planted):
    spec, perm, source, target = planted
    bank = PairBank.allocate({n: tuple(t.shape) for n, t in source.items()}, 1, dtype="bfloat16")
    bank.add(target, source)
    result = match(spec, bank, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(result.perm[g], p) for g, p in perm.items())


def test_full_stack_refuses_more_pairs():
    stack = GradientStack({"w": (2,)}, capacity=1)
    stack.append({"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="full"):
        stack.append({"w": torch.zeros(2)})


def test_empty_bank_is_refused(planted):
    spec, _, source, _ = planted
    with pytest.raises(ValueError, match="at least one pair"):
        match(spec, PairBank.allocate({n: tuple(t.shape) for n, t in source.items()}, 1))


def transformer_like_pairs(count: int, generator: torch.Generator):
    """A residual group r and four MLP-like groups m0..m3 that each share parameters with r
    only: m0..m3 never see each other's permutations."""
    groups = {"emb.weight": (None, "r")}
    shapes = {"emb.weight": (11, 20)}
    for k in range(4):
        groups |= {f"up{k}.weight": (f"m{k}", "r"), f"down{k}.weight": ("r", f"m{k}")}
        shapes |= {f"up{k}.weight": (16 + k, 20), f"down{k}.weight": (20, 16 + k)}
    spec = spec_from_param_groups(groups, shapes)
    pairs = [tuple({n: torch.randn(s, generator=generator) for n, s in shapes.items()} for _ in range(2))
             for _ in range(count)]
    return spec, pairs


@pytest.mark.parametrize("solver", ["jv", "scipy"])
def test_independent_groups_solved_on_threads_give_the_serial_answers(solver, monkeypatch):
    monkeypatch.setattr(matching, "_PARALLEL_MIN_SIZE", 1)  # these groups are small
    spec, pairs = transformer_like_pairs(3, torch.Generator().manual_seed(7))
    threads: set[str] = set()

    def recording_scipy(cost):
        threads.add(threading.current_thread().name)
        return scipy_solver(cost)

    results = []
    for workers in (1, 4):
        bank = PairBank.from_pairs(pairs, pairs[0][1])
        chosen = get_solver("jv") if solver == "jv" else recording_scipy
        results.append(match(spec, bank, generator=torch.Generator().manual_seed(3), solver=chosen,
                             workers=workers, init=spec.random(torch.Generator().manual_seed(4))))
    serial, threaded = results
    assert serial.sweeps > 1  # units moved and groups were re-solved
    assert serial.objectives == threaded.objectives
    assert all(torch.equal(serial.perm[g], threaded.perm[g]) for g in serial.perm)
    if solver == "scipy":
        assert any(name.startswith("trajx-solve") for name in threads)


def batches(spec, names, stale, limit):
    neighbours = matching._neighbours(spec, tuple(spec.param_groups))
    order = [spec.group(n) for n in names]
    found, start, stale = [], 0, set(stale)
    while True:
        batch, start = matching._next_batch(order, start, stale, neighbours, limit)
        if not batch:
            return found
        found.append([g.name for g in batch])
        stale.difference_update(found[-1])


def test_a_batch_holds_consecutive_large_groups_that_share_no_parameter(monkeypatch):
    spec, _ = transformer_like_pairs(1, torch.Generator().manual_seed(0))
    sweep = ("m0", "m1", "r", "m2", "m3")
    # small groups are solved alone, in sweep order
    assert batches(spec, sweep, sweep, limit=8) == [["m0"], ["m1"], ["r"], ["m2"], ["m3"]]
    monkeypatch.setattr(matching, "_PARALLEL_MIN_SIZE", 1)
    assert batches(spec, sweep, sweep, limit=8) == [["m0", "m1"], ["r"], ["m2", "m3"]]
    assert batches(spec, sweep, sweep, limit=1) == [["m0"], ["m1"], ["r"], ["m2"], ["m3"]]
    # r is not stale yet but may become so from m0's answer: it ends the batch, then is skipped
    assert batches(spec, ("m0", "r", "m1"), {"m0", "m1"}, limit=8) == [["m0"], ["m1"]]
    assert batches(spec, ("m0", "m2", "m1"), {"m0", "m1"}, limit=8) == [["m0", "m1"]]
