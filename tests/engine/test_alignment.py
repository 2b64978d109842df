"""Alignment: weight and activation matching onto model A, and interpolation barriers."""

import pytest
import torch
from torch import nn

from tests.support.engine_setups import CNN, digits, train
from trajx.engine.merging.alignment import (
    Curve,
    PathEvaluator,
    activation_matching,
    find_probes,
    interpolate,
    matched_parameters,
    weight_matching,
)
from trajx.engine.permutation.spec import apply_permutation
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.zoo import build_model, example_input, init_state_dict
from trajx.errors import UnsupportedModel

WIDE_MLP = ("mlp", {"in_features": 64, "hidden": [128, 128], "num_classes": 10})


def _trained(arch, images: bool, seed: int) -> dict[str, torch.Tensor]:
    model = build_model(*arch)
    model.load_state_dict(init_state_dict(*arch, seed))
    return train(model, digits(images)[0], epochs=3, lr=0.05, seed=seed)[-1]


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def pair(request):
    arch, images = (WIDE_MLP, False) if request.param == "mlp" else (CNN, True)
    model = build_model(*arch)
    spec = derive_spec(model, example_input(*arch))
    train, test = digits(images)
    return arch, model, spec, _trained(arch, images, 0), _trained(arch, images, 1), train, test


def _evaluator(pair):
    _, model, _, _, _, train, test = pair
    return PathEvaluator(model, [train.inputs[i:i + 128] for i in range(0, 640, 128)], test, 512,
                         torch.device("cpu"))


def test_weight_matching_recovers_a_permuted_twin_with_no_barrier(pair):
    _, model, spec, a, _, _, _ = pair
    twin = apply_permutation(spec, spec.random(torch.Generator().manual_seed(5)), a)
    result = weight_matching(spec, a, twin, matched_parameters(model, spec))
    assert result.objectives[-1] >= result.objectives[0] and result.sweeps >= 1
    aligned = apply_permutation(spec, result.perm, twin)
    for name, tensor in a.items():
        torch.testing.assert_close(aligned[name], tensor, msg=name)
    curve = _evaluator(pair).curve(a, aligned)
    assert [p["alpha"] for p in curve.points] == pytest.approx([i / 10 for i in range(11)])
    assert abs(curve.barrier("loss")) < 1e-4


def test_activation_matching_on_a_permuted_twin_gives_the_same_function(pair):
    _, model, spec, a, _, train, test = pair
    twin = apply_permutation(spec, spec.random(torch.Generator().manual_seed(6)), a)
    model.load_state_dict(a)
    probes = find_probes(model, spec, train.inputs[:32], torch.Generator().manual_seed(0))
    assert {p.group for p in probes} == {g.name for g in spec.groups}
    perm = activation_matching(model, spec, a, twin, [train.inputs[:512]], probes)
    aligned = apply_permutation(spec, perm, twin)
    model.load_state_dict(a)
    expected = model(test.inputs)
    model.load_state_dict(aligned)
    torch.testing.assert_close(model(test.inputs), expected)
    assert abs(_evaluator(pair).curve(a, aligned).barrier("loss")) < 1e-4


def test_alignment_lowers_the_barrier_between_independent_runs(pair):
    _, model, spec, a, b, train, _ = pair
    evaluator = _evaluator(pair)
    plain = evaluator.curve(a, b)
    by_weights = evaluator.curve(a, apply_permutation(spec, weight_matching(
        spec, a, b, matched_parameters(model, spec)).perm, b))
    model.load_state_dict(a)
    probes = find_probes(model, spec, train.inputs[:32], torch.Generator().manual_seed(0))
    by_activations = evaluator.curve(a, apply_permutation(spec, activation_matching(
        model, spec, a, b, [train.inputs[:512]], probes), b))
    assert plain.barrier("loss") > 0.1
    assert by_weights.barrier("loss") < 0.7 * plain.barrier("loss")
    assert by_activations.barrier("loss") < 0.7 * plain.barrier("loss")


def test_interpolation_ends_at_a_and_b_and_its_midpoint_is_the_merge_tensor_by_tensor():
    """Every floating tensor is interpolated, not only the permuted ones: the head's bias
    (no permuted axis) used to stay A's at every α."""
    arch = ("mlp", {"in_features": 64, "hidden": [32, 32], "num_classes": 10})
    model = build_model(*arch)
    spec = derive_spec(model, example_input(*arch))
    a, b = init_state_dict(*arch, 0), init_state_dict(*arch, 1)
    aligned = apply_permutation(spec, weight_matching(spec, a, b, matched_parameters(model, spec)).perm, b)
    inputs = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))

    def outputs(state):
        model.load_state_dict(state)
        return model.eval()(inputs)

    assert "head.bias" not in matched_parameters(model, spec)
    assert torch.equal(outputs(interpolate(a, aligned, 0.0)), outputs(a))
    assert torch.equal(outputs(interpolate(a, aligned, 1.0)), outputs(aligned))
    torch.testing.assert_close(outputs(aligned), outputs(b))  # the permutation keeps B's function
    merged = interpolate(a, aligned, 0.5)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, (a[name] + aligned[name]) / 2, rtol=0, atol=1e-7, msg=name)


def test_barrier_is_the_largest_excess_over_the_endpoints_line():
    curve = Curve([{"alpha": 0.0, "loss": 1.0, "accuracy": 0.9}, {"alpha": 0.5, "loss": 2.5, "accuracy": 0.5},
                   {"alpha": 1.0, "loss": 2.0, "accuracy": 0.7}])
    assert curve.barrier("loss") == pytest.approx(1.0)
    assert curve.barrier("accuracy") == pytest.approx(0.3)
    assert curve.to_json()["accuracy_barrier"] == pytest.approx(0.3)


class _Functional(nn.Module):
    """Its hidden units never leave a module: only functional code sees them."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 4))
        self.w2 = nn.Parameter(torch.randn(3, 8))

    def forward(self, x):
        return nn.functional.linear(torch.relu(nn.functional.linear(x, self.w1)), self.w2)


def test_a_group_no_module_output_carries_is_refused_for_activation_matching():
    model = _Functional()
    spec = derive_spec(model, torch.randn(2, 4))
    with pytest.raises(UnsupportedModel) as error:
        find_probes(model, spec, torch.randn(5, 4), torch.Generator().manual_seed(0))
    assert error.value.code == "activations_unobservable"


TOKENS = {"input": "tokens", "d_in": 8, "seq_len": 6, "d_model": 32, "num_layers": 1}


@pytest.mark.parametrize("arch", [
    ("transformer", TOKENS),
    ("transformer", {**TOKENS, "attention": "fused"}),
    ("resnet", {"depth": 20, "image_size": 8, "in_channels": 1, "width": 0.25}),
])
def test_activation_matching_handles_heads_and_residual_streams(arch):
    """Attention heads are units of several features (three times over in a fused q/k/v
    output); residual streams are carried by many outputs."""
    model = build_model(*arch)
    inputs = example_input(*arch, batch=64)
    spec = derive_spec(model, inputs)
    a = init_state_dict(*arch, 0)
    twin = apply_permutation(spec, spec.random(torch.Generator().manual_seed(2)), a)
    model.load_state_dict(a)
    probes = find_probes(model, spec, inputs, torch.Generator().manual_seed(0))
    if arch[0] == "transformer":
        heads = next(p for p in probes if p.group.startswith("P_blocks.0.attn"))
        fused = arch[1].get("attention") == "fused"
        assert (heads.repeat, heads.tile) == (8, 3 if fused else 1)  # 4 heads of 8 dimensions
    perm = activation_matching(model, spec, a, twin, [inputs], probes)
    model.load_state_dict(a)
    expected = model(inputs)
    model.load_state_dict(apply_permutation(spec, perm, twin))
    torch.testing.assert_close(model(inputs), expected)


def test_probing_leaves_the_model_as_it_was(pair):
    _, model, spec, a, _, train, _ = pair
    model.load_state_dict(a)
    find_probes(model, spec, train.inputs[:16], torch.Generator().manual_seed(0))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, a[name], msg=name)
