"""Merging N models: MergeMany, per-layer weights, REPAIR, greedy soups."""

import pytest
import torch

from trajx.engine.merging.alignment import matched_parameters
from trajx.engine.merging.merge import (
    _channel_stats,
    greedy_soup,
    hidden_layers,
    merge_many,
    repair,
    weighted_merge,
    weights_for,
)
from trajx.engine.permutation.spec import apply_permutation
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.zoo import build_model, example_input, init_state_dict

ARCH = ("mlp", {"in_features": 8, "hidden": [16, 16], "num_classes": 3})


@pytest.fixture(scope="module")
def setup():
    model = build_model(*ARCH)
    return model, derive_spec(model, example_input(*ARCH))


def test_merge_many_brings_permuted_twins_into_one_frame(setup):
    model, spec = setup
    base = init_state_dict(*ARCH, 0)
    twins = [apply_permutation(spec, spec.random(torch.Generator().manual_seed(s)), base) for s in range(3)]
    alignment = merge_many(spec, twins, [1 / 3] * 3, matched_parameters(model, spec), rounds=5)
    aligned = alignment.apply(spec, twins)
    for name in base:
        assert torch.equal(aligned[1][name], aligned[0][name]) and torch.equal(aligned[2][name], aligned[0][name])
    assert alignment.changed[-1] == 0 and alignment.rounds == len(alignment.changed) <= 5


def test_per_layer_weights_take_the_longest_prefix_at_a_name_boundary():
    layer = {"blocks": [1.0, 0.0], "blocks.1": [0.0, 2.0]}
    assert weights_for("blocks.1.fc.weight", [1.0, 1.0], layer) == [0.0, 1.0]
    assert weights_for("blocks.0.fc.weight", [1.0, 1.0], layer) == [1.0, 0.0]
    assert weights_for("blocks.10.fc.weight", [1.0, 1.0], {"blocks.1": [0.0, 1.0]}) == [0.5, 0.5]
    a, b = {"w": torch.ones(2), "n": torch.tensor(3)}, {"w": torch.zeros(2), "n": torch.tensor(7)}
    merged = weighted_merge([a, b], [3.0, 1.0])
    assert torch.equal(merged["w"], torch.full((2,), 0.75)) and merged["n"] == 3


def test_repair_restores_the_interpolated_channel_statistics(setup):
    model, spec = setup
    states = [init_state_dict(*ARCH, s) for s in (0, 1)]
    inputs = [torch.randn(256, 8, generator=torch.Generator().manual_seed(0))]
    layers = hidden_layers(model, spec)
    assert layers == ["blocks.0.fc", "blocks.1.fc"]
    repaired, report = repair(model, weighted_merge(states, [0.5, 0.5]), states, [0.5, 0.5], layers, inputs)
    for layer in layers:
        goal = []
        for state in states:
            model.load_state_dict(state)
            goal.append(_channel_stats(model, layer, inputs))
        model.load_state_dict(repaired)
        mean, std = _channel_stats(model, layer, inputs)
        torch.testing.assert_close(mean, (goal[0][0] + goal[1][0]) / 2)
        torch.testing.assert_close(std, (goal[0][1] + goal[1][1]) / 2)
    assert report[0]["merged_std"] < report[0]["target_std"]  # averaging unaligned units shrank them


def test_greedy_soup_adds_best_first_while_the_choosing_score_does_not_drop():
    states = [{"w": torch.tensor([v])} for v in (0.0, 1.0, 2.0, 10.0)]

    def score(state):  # best at w = 1.2
        return -abs(state["w"].item() - 1.2)

    soup = greedy_soup(states, score)
    assert soup.ranking == [1, 2, 0, 3]
    # 1 -> {1, 2}: 1.5 (-0.3 < -0.2: refused); {1, 0}: 0.5 (refused); {1, 3}: 5.5 (refused)
    assert soup.ingredients == [1] and [t["kept"] for t in soup.tried] == [False, False, False]
    # Two models whose errors cancel: the pair is kept, a third that pulls away is not.
    states = [{"w": torch.tensor(v)} for v in ([0.9, 0.1], [0.1, 0.9], [0.0, 0.0], [5.0, 5.0])]
    soup = greedy_soup(states, lambda state: -float((state["w"] - 0.5).norm()))
    assert soup.ranking == [0, 1, 2, 3] and soup.ingredients == [0, 1]
    torch.testing.assert_close(soup.state["w"], torch.tensor([0.5, 0.5]))
