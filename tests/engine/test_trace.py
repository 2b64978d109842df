"""Permutation-spec derivation: zoo models, adversarial graphs, refusals, explicit specs."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from tests.engine.invariance import assert_invariant
from trajx.engine.matching.descent import PairBank, match
from trajx.engine.permutation.spec import apply_permutation, spec_from_param_groups
from trajx.engine.permutation.trace import check_spec, derive_spec
from trajx.engine.zoo import build_model, example_input
from trajx.errors import InvalidInput, UnsupportedModel

ZOO = {
    "mlp": {"in_features": 12, "hidden": [32, 32], "num_classes": 3},
    "mlp-batchnorm": {"in_features": 12, "hidden": [8, 8], "num_classes": 3, "norm": "batchnorm",
                      "activation": "gelu"},
    "mlp-layernorm": {"in_features": 12, "hidden": [8], "num_classes": 3, "norm": "layernorm",
                      "activation": "tanh"},
    "cnn": {"channels": [4, 4, 8, 8], "fc": [16], "image_size": 8, "in_channels": 1},
    "cnn-avgpool": {"channels": [4, 6, 8], "fc": [], "image_size": 8, "pooling": "avgpool",
                    "batchnorm": False, "activation": "silu"},
    "resnet": {"depth": 20, "width": 0.25, "image_size": 8},
    "resnet-18": {"depth": 18, "width": 0.0625, "image_size": 8},
    "transformer": {"d_model": 16, "num_heads": 4, "num_layers": 2, "image_size": 8},
    "transformer-cls-tokens": {"input": "tokens", "d_in": 5, "seq_len": 6, "d_model": 8,
                               "num_heads": 2, "num_layers": 1, "pool": "cls"},
    "transformer-fused": {"d_model": 16, "num_heads": 4, "num_layers": 2, "image_size": 8,
                          "attention": "fused"},
    "transformer-multihead": {"d_model": 16, "num_heads": 4, "num_layers": 2, "image_size": 8,
                              "attention": "multihead"},
}
# residual streams + per-block groups: resnet-20 3 + 9, resnet-18 4 + 8; transformer 1 + 2 per layer
EXPECTED_GROUPS = {"mlp": 2, "mlp-batchnorm": 2, "mlp-layernorm": 1, "cnn": 5, "cnn-avgpool": 3,
                   "resnet": 12, "resnet-18": 12, "transformer": 5, "transformer-cls-tokens": 3,
                   "transformer-fused": 5, "transformer-multihead": 5}


def _zoo(case: str) -> tuple[nn.Module, torch.Tensor]:
    name = case.split("-")[0]
    torch.manual_seed(0)
    return build_model(name, ZOO[case]), example_input(name, ZOO[case], batch=3)


@pytest.mark.parametrize("case", sorted(ZOO))
def test_zoo_models_get_a_spec_that_leaves_outputs_unchanged(case):
    model, x = _zoo(case)
    spec = derive_spec(model, x)
    assert len(spec.groups) == EXPECTED_GROUPS[case]
    assert set(spec.param_groups) == set(model.state_dict())
    assert_invariant(model, spec, x)


def test_mlp_groups_leave_input_and_output_axes_fixed():
    model, x = _zoo("mlp")
    spec = derive_spec(model, x)
    first, second = "P_blocks.0.fc.weight_0", "P_blocks.1.fc.weight_0"
    assert spec.to_json() == {
        "blocks.0.fc.weight": [first, None], "blocks.0.fc.bias": [first],
        "blocks.1.fc.weight": [second, first], "blocks.1.fc.bias": [second],
        "head.weight": [None, second], "head.bias": [None],
    }
    assert spec.group(first).size == 32


def test_batchnorm_statistics_share_the_channel_group():
    model, x = _zoo("mlp-batchnorm")
    groups = derive_spec(model, x).param_groups
    channel = groups["blocks.0.fc.weight"][0]
    for stat in ("weight", "bias", "running_mean", "running_var"):
        assert groups[f"blocks.0.norm.{stat}"] == (channel,)
    assert groups["blocks.0.norm.num_batches_tracked"] == ()


def test_flatten_after_conv_repeats_the_channel_group_over_positions():
    model, x = _zoo("cnn")
    spec = derive_spec(model, x)
    channels = spec.param_groups["features.3.conv.weight"][0]
    # 8x8 input, two max-pools: each of the 8 channels owns a block of 2*2 fc inputs
    assert spec.param_groups["fc.0.weight"] == ("P_fc.0.weight_0", channels)
    assert spec.repeat("fc.0.weight", 1) == 4
    assert spec.to_json()["fc.0.weight"] == ["P_fc.0.weight_0", f"{channels}*4"]
    assert spec.group(channels).size == 8


def test_resnet_residual_stream_is_one_group_per_stage():
    model, x = _zoo("resnet")
    groups = derive_spec(model, x).param_groups
    stream = groups["stem.conv.weight"][0]
    for block in range(3):
        assert groups[f"stages.0.{block}.bn2.weight"] == (stream,)
        assert groups[f"stages.0.{block}.conv1.weight"][1] == stream
    assert groups["stages.1.0.conv1.weight"][1] == stream
    stage1 = groups["stages.1.0.shortcut.conv.weight"][0]
    assert groups["stages.1.0.bn2.weight"] == (stage1,) and stage1 != stream
    assert groups["stages.1.0.shortcut.conv.weight"][1] == stream
    assert groups["head.weight"] == (None, groups["stages.2.2.bn2.bias"][0])


def test_transformer_stream_heads_and_mlp_groups():
    model, x = _zoo("transformer")
    spec = derive_spec(model, x)
    groups = spec.param_groups
    stream = groups["pos_embed"][2]
    assert groups["pos_embed"][:2] == (None, None)
    assert groups["blocks.1.ln2.weight"] == (stream,) and groups["ln_f.bias"] == (stream,)
    assert groups["blocks.0.attn.q.weight"][1] == stream
    assert groups["blocks.0.attn.out.weight"][0] == stream
    heads = groups["blocks.0.attn.q.weight"][0]
    assert spec.group(heads).size == 4 and spec.repeat("blocks.0.attn.q.weight", 0) == 4
    assert groups["blocks.0.attn.k.bias"] == (heads,) and groups["blocks.0.attn.v.weight"][0] == heads
    assert groups["blocks.0.attn.out.weight"][1] == heads
    assert spec.group(groups["blocks.0.mlp.fc1.weight"][0]).size == 64


class _Residual(nn.Module):
    """Hand-written residual MLP with view, slicing, cat and functional layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.proj = nn.Linear(6 * 4 * 4, 10)
        self.inner = nn.Linear(10, 7)
        self.back = nn.Linear(7, 10)
        self.side = nn.Linear(10, 3)
        self.weight = nn.Parameter(torch.randn(4, 13) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        h = self.proj(h.view(h.size(0), -1))
        h = h + self.back(F.gelu(self.inner(h)))  # residual: h, back share a group
        kept = h[:, :5]  # a partial slice fixes the stream
        both = torch.cat([self.side(h), kept.sum(dim=1, keepdim=True).expand(-1, 10)], dim=1)
        return F.linear(both, self.weight)


def test_adversarial_graph_is_derived_conservatively_and_correctly():
    model = _Residual()
    x = torch.randn(3, 2, 8, 8)
    spec = derive_spec(model, x)
    groups = spec.param_groups
    assert groups["conv.weight"][0] is not None and spec.repeat("proj.weight", 1) == 16
    assert groups["proj.weight"][0] is None  # sliced by h[:, :5]
    assert groups["inner.weight"][0] is not None  # the residual branch's hidden layer survives
    assert groups["side.weight"] == (None, None) and groups["weight"] == (None, None)
    assert_invariant(model, spec, x)


class _SDPAEncoder(nn.Module):
    """Attention through F.scaled_dot_product_attention with a fused qkv projection."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.qkv = nn.Linear(8, 3 * 8)
        self.out = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, 2, 4).permute(2, 0, 3, 1, 4)  # 3 x (N, heads, L, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        y = x + self.out(y.transpose(1, 2).reshape(n, length, 8))
        return self.head(y.mean(1))


@pytest.mark.parametrize("causal", [False, True])
def test_fused_qkv_heads_move_alike_in_q_k_and_v(causal):
    model = _SDPAEncoder(causal)
    x = torch.randn(2, 5, 8)
    # the fused axis is (3, heads, 4): q/k/v stay in order, whole heads move in all three;
    # the residual stream is the input itself
    spec = derive_spec(model, x)
    (heads,) = spec.groups
    assert heads.size == 2
    assert spec.to_json()["qkv.weight"] == [f"3*{heads.name}*4", None]
    assert spec.to_json()["out.weight"] == [None, f"{heads.name}*4"]
    assert_invariant(model, spec, x)


class _NanoGPTBlock(nn.Module):
    """nanoGPT-style: a fused c_attn split into q, k, v, causal SDPA, GELU MLP."""

    def __init__(self, split_with: str) -> None:
        super().__init__()
        self.split_with = split_with
        self.ln_1, self.ln_2 = nn.LayerNorm(8), nn.LayerNorm(8)
        self.c_attn, self.c_proj = nn.Linear(8, 24), nn.Linear(8, 8)
        self.c_fc, self.mlp_proj = nn.Linear(8, 16), nn.Linear(16, 8)
        self.embed, self.head = nn.Linear(5, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        n, length, d = x.size()
        qkv = self.c_attn(self.ln_1(x))
        if self.split_with == "split":
            q, k, v = qkv.split(d, dim=2)
        elif self.split_with == "chunk":
            q, k, v = torch.chunk(qkv, 3, dim=-1)
        else:
            q, k, v = qkv.unflatten(-1, (3, d)).unbind(dim=2)
        q, k, v = (t.view(n, length, 2, d // 2).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(n, length, d))
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))
        return self.head(x[:, -1, :])


@pytest.mark.parametrize("split_with", ["split", "chunk", "unbind"])
def test_split_fused_projections_keep_their_cut_axis_fixed_and_the_rest_free(split_with):
    model = _NanoGPTBlock(split_with)
    x = torch.randn(2, 4, 5)
    spec = derive_spec(model, x)
    groups = spec.param_groups
    stream = groups["embed.weight"][0]
    heads = groups["c_attn.weight"][0]
    assert stream is not None and groups["c_attn.weight"] == (heads, stream)
    assert spec.tile("c_attn.weight", 0) == 3 and spec.repeat("c_attn.weight", 0) == 4
    assert groups["ln_2.bias"] == (stream,) and groups["c_proj.weight"] == (stream, heads)
    assert groups["c_fc.weight"][0] not in (None, stream, heads)
    assert_invariant(model, spec, x)


class _SDPAHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(6, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (layer(x).unflatten(-1, (2, 4)).transpose(1, 2) for layer in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, 4)
        return self.out(y.transpose(1, 2).flatten(2)).sum(1)


def test_scaled_dot_product_attention_moves_whole_heads():
    model = _SDPAHeads()
    x = torch.randn(2, 5, 6)
    spec = derive_spec(model, x)
    heads = spec.param_groups["q.weight"][0]
    assert spec.param_groups["v.bias"] == (heads,) and spec.param_groups["out.weight"] == (None, heads)
    assert spec.group(heads).size == 2 and spec.repeat("out.weight", 1) == 4
    assert_invariant(model, spec, x)


class _GroupNormStack(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.GroupNorm(groups, 6)
        self.conv2 = nn.Conv2d(6, 4, 1)
        self.head = nn.Linear(2 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.interpolate(F.silu(self.norm(self.conv(x))), scale_factor=2))
        pooled = torch.stack([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # (N, 2, 4)
        return self.head(pooled.flatten(1))


@pytest.mark.parametrize("groups, permuted", [(1, True), (6, True), (2, False)])
def test_group_norm_permutes_channels_only_when_groups_allow(groups, permuted):
    model = _GroupNormStack(groups)
    x = torch.randn(2, 3, 4, 4)
    spec = derive_spec(model, x)
    assert (spec.param_groups["norm.weight"][0] is not None) is permuted
    # conv2's channels are the inner axis of a stat-major flatten: they move alike in both stats
    channels = spec.param_groups["conv2.weight"][0]
    assert spec.to_json()["head.weight"] == [None, f"2*{channels}"]
    assert_invariant(model, spec, x)


class _MeanHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).mean(dim=-1)  # averaging the features: their order is free


def test_reduction_over_features_leaves_their_group_free():
    spec = derive_spec(_MeanHead(), torch.randn(2, 4))
    assert spec.param_groups["fc.weight"] == ("P_fc.weight_0", None)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_tied_weights_are_permuted_alike():
    model = _Tied()
    spec = derive_spec(model, torch.randn(2, 5))
    assert spec.param_groups["a.weight"] == spec.param_groups["b.weight"] == (None, None)


class _WithFFT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        h = torch.fft.fft(h).real  # mixes every feature with every other
        return self.head(torch.relu(self.fc2(h)))


class _WithSort(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(self.fc(x), dim=-1).values


class _WithFlip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flip(x, dims=(1,)))


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else x


@pytest.mark.parametrize("model, x, op, node, code", [
    (_WithFFT(), torch.randn(2, 8), "aten.fft_fft.default", "fft_fft", "unsupported_op"),
    (_WithSort(), torch.randn(2, 4), "aten.sort.default", "sort", "unsupported_op"),
    (_WithFlip(), torch.randn(2, 4), "aten.flip.default", "flip", "unsupported_op"),
    (_DataDependent(), torch.randn(2, 3), "torch.export.export", "_DataDependent", "untraceable"),
])
def test_unsupported_ops_are_refused_naming_op_and_node(model, x, op, node, code):
    with pytest.raises(UnsupportedModel) as info:
        derive_spec(model, x)
    assert info.value.code == code
    assert op in info.value.details["op"] and info.value.details["node"] == node
    assert op in info.value.message


def test_tracing_leaves_batchnorm_statistics_and_mode_alone():
    model, x = _zoo("resnet")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    derive_spec(model, x)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_self_check_names_the_group_that_breaks_invariance():
    model, x = _zoo("mlp")
    wrong = derive_spec(model, x).to_json()
    wrong["blocks.1.fc.bias"] = [None]  # the bias must move with its units
    spec = spec_from_param_groups(wrong, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    with pytest.raises(UnsupportedModel) as info:
        check_spec(model, spec, x, torch.Generator().manual_seed(0))
    assert info.value.code == "spec_self_check_failed"
    assert info.value.details["group"] == "P_blocks.1.fc.weight_0"


def test_explicit_spec_overrides_named_entries():
    model, x = _zoo("mlp")
    hidden = "P_blocks.0.fc.weight_0"
    explicit = {"blocks.0.fc.weight": [None, None], "blocks.0.fc.bias": [None],
                "blocks.1.fc.weight": ["P_blocks.1.fc.weight_0", None]}
    spec = derive_spec(model, x, explicit)
    assert [g.name for g in spec.groups] == ["P_blocks.1.fc.weight_0"]
    assert hidden not in spec.to_json()["blocks.1.fc.weight"]


def test_explicit_spec_that_breaks_invariance_is_refused():
    model, x = _zoo("mlp")
    with pytest.raises(UnsupportedModel) as info:
        derive_spec(model, x, {"blocks.0.fc.bias": [None]})
    assert info.value.code == "spec_self_check_failed"
    assert info.value.details["group"] == "P_blocks.0.fc.weight_0"


@pytest.mark.parametrize("explicit, words", [
    ({"blocks.9.fc.weight": [None, None]}, "not a parameter"),
    ({"head.bias": [None, None]}, "lists 2 axes"),
    ({"head.bias": ["g*0"]}, "positive int"),
    ({"blocks.0.fc.bias": ["P_blocks.1.fc.weight_0*2"]}, "units"),
])
def test_malformed_explicit_spec_is_invalid_input(explicit, words):
    model, x = _zoo("mlp")
    with pytest.raises(InvalidInput) as info:
        derive_spec(model, x, explicit)
    assert info.value.code == "invalid_permutation_spec"
    assert words in info.value.message


class _WithOpaqueOp(nn.Module):
    """Hidden features reversed (flip has no rule: it depends on their order)."""

    def __init__(self, at_output: bool = False) -> None:
        super().__init__()
        self.at_output = at_output
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        if not self.at_output:
            h = torch.flip(h, dims=(-1,))
        out = self.head(torch.relu(self.fc2(h)))
        return torch.flip(out, dims=(-1,)) if self.at_output else out


def test_an_empty_explicit_spec_does_not_let_an_op_cut_a_group_silently():
    model, x = _WithOpaqueOp(), torch.randn(2, 4)
    with pytest.raises(UnsupportedModel) as strict:
        derive_spec(model, x)
    assert strict.value.details["op"] == "aten.flip.default"
    for explicit in ({}, {"fc1.weight": [None, None], "fc1.bias": [None]}):
        with pytest.raises(UnsupportedModel) as info:
            derive_spec(model, x, explicit)
        error = info.value
        assert error.code == "unsupported_op" and error.details["op"] == "aten.flip.default"
        # fc1's hidden units feed the flip, fc2 reads its output: both would stay unpermuted.
        assert error.details["uncovered"] == sorted({"fc1.weight", "fc1.bias", "fc2.weight"} - set(explicit))
        assert "fc2.weight" in error.message


def test_an_explicit_spec_naming_what_an_opaque_op_cuts_completes_the_model():
    model, x = _WithOpaqueOp(), torch.randn(2, 4)
    spec = derive_spec(model, x, {"fc1.weight": [None, None], "fc1.bias": [None],
                                  "fc2.weight": ["P_fc2.weight_0", None]})
    assert [g.name for g in spec.groups] == ["P_fc2.weight_0"]
    assert spec.param_groups["fc2.bias"] == ("P_fc2.weight_0",)
    assert_invariant(model, spec, x)


def test_an_opaque_op_before_the_output_cuts_the_head_off_it():
    # Tracing cannot tell whether the op keeps the class order: the head must be named.
    model, x = _WithOpaqueOp(at_output=True), torch.randn(2, 4)
    with pytest.raises(UnsupportedModel) as info:
        derive_spec(model, x, {})
    assert info.value.details["uncovered"] == ["head.bias", "head.weight"]
    spec = derive_spec(model, x, {"head.weight": [None, "P_fc2.weight_0"], "head.bias": [None]})
    assert [g.name for g in spec.groups] == ["P_fc1.weight_0", "P_fc2.weight_0"]
    assert_invariant(model, spec, x)


class _FlipWeight(nn.Module):
    """An opaque op reading a parameter directly: what it does to that parameter is unknown."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.mix = nn.Parameter(torch.randn(6, 6))
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x)) + torch.flip(self.mix, dims=(0,)).sum(0))


def test_an_opaque_op_must_have_the_parameters_it_reads_named():
    model, x = _FlipWeight(), torch.randn(2, 4)
    with pytest.raises(UnsupportedModel) as info:
        derive_spec(model, x, {"fc.weight": [None, None], "fc.bias": [None], "head.weight": [None, None]})
    assert info.value.details["uncovered"] == ["mix"]
    explicit = {name: [None] * tensor.ndim for name, tensor in model.state_dict().items()}
    assert derive_spec(model, x, explicit).groups == ()


@pytest.mark.parametrize("case", ["cnn", "transformer-fused", "transformer-multihead"])
def test_matching_recovers_a_planted_permutation_through_repeated_and_tiled_axes(case):
    model, x = _zoo(case)
    spec = derive_spec(model, x)
    source = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    planted = spec.random(torch.Generator().manual_seed(3))
    target = apply_permutation(spec, planted, source)
    found = match(spec, PairBank.from_pairs([(target, source)], source)).perm
    assert all(torch.equal(found[g], planted[g]) for g in planted)


def test_a_derived_spec_round_trips_through_its_json():
    for case in ("cnn", "transformer"):
        model, x = _zoo(case)
        spec = derive_spec(model, x)
        again = derive_spec(model, x, spec.to_json())
        assert again.to_json() == spec.to_json()
        assert again.groups == spec.groups


def test_a_wrong_repeat_in_an_explicit_spec_is_caught():
    model, x = _zoo("cnn")
    json = derive_spec(model, x).to_json()
    channels = json["features.3.conv.weight"][0]
    with pytest.raises(InvalidInput, match="units"):  # 32 features / 2 = 16 units, not 8
        derive_spec(model, x, {"fc.0.weight": [json["fc.0.weight"][0], f"{channels}*2"]})


def test_permute_axis_moves_blocks_of_a_repeated_axis():
    from trajx.engine.permutation.spec import expand_index, parse_group_ref, permute_axis

    assert expand_index(torch.tensor([1, 0]), 3).tolist() == [3, 4, 5, 0, 1, 2]
    features = torch.arange(6.0).reshape(1, 6)  # 2 channels x 3 positions, channel-major
    assert permute_axis(features, 1, torch.tensor([1, 0]), 3).tolist() == [[3, 4, 5, 0, 1, 2]]
    assert parse_group_ref("P_a.weight_0*16") == ("P_a.weight_0", 16, 1)
    assert parse_group_ref("plain") == ("plain", 1, 1)
    assert parse_group_ref("3*P_qkv.weight_0*4") == ("P_qkv.weight_0", 4, 3)
    assert expand_index(torch.tensor([1, 0]), 2, tile=2).tolist() == [2, 3, 0, 1, 6, 7, 4, 5]
    with pytest.raises(ValueError, match="positive int"):
        parse_group_ref("g*x")
    with pytest.raises(ValueError, match="positive int"):
        parse_group_ref("2*g*0")


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=5), data=st.data())
def test_select_along_gathers_what_index_select_gathers(shape, data):
    from trajx.engine.permutation.spec import select_along

    tensor = torch.randn(shape)
    if data.draw(st.booleans(), label="transposed") and tensor.ndim > 1:
        tensor = tensor.transpose(0, -1)  # not contiguous: the plain index_select path
    dim = data.draw(st.integers(-tensor.ndim, tensor.ndim - 1), label="dim")
    index = torch.tensor(data.draw(st.lists(st.integers(0, tensor.shape[dim] - 1), max_size=7), label="index"),
                         dtype=torch.int64)
    expected = tensor.index_select(dim, index)
    selected = select_along(tensor, dim, index)
    assert selected.shape == expected.shape
    assert torch.equal(selected, expected)


@settings(max_examples=12, deadline=None)
@given(
    hidden=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    norm=st.sampled_from(["none", "layernorm", "batchnorm"]),
    activation=st.sampled_from(["relu", "gelu", "tanh", "silu"]),
    channels=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    pool_every=st.integers(1, 2),
    pooling=st.sampled_from(["flatten", "avgpool"]),
)
def test_random_small_architectures_always_get_a_proven_spec(hidden, norm, activation, channels,
                                                            pool_every, pooling):
    configs = {
        "mlp": {"in_features": 5, "hidden": hidden, "num_classes": 3, "norm": norm,
                "activation": activation},
        "cnn": {"channels": channels, "fc": hidden[:1], "pool_every": pool_every, "pooling": pooling,
                "image_size": 16, "in_channels": 2, "batchnorm": norm == "batchnorm"},
    }
    for name, config in configs.items():
        model = build_model(name, config)
        x = example_input(name, config)
        spec = derive_spec(model, x)
        # a group per hidden layer, except width-1 layers which have nothing to permute
        widths = hidden if name == "mlp" else channels + hidden[:1]
        assert len(spec.groups) == sum(w > 1 for w in widths)
        assert_invariant(model, spec, x)


class _Regrouped(nn.Module):
    """Flattened conv features viewed as two halves: channels can only move in pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).flatten(1)  # (N, 4 * 2 * 2), channel-major
        halves = h.view(h.shape[0], 2, 8).sum(dim=2)  # (N, 2): channels {0, 1} and {2, 3}
        return self.fc(torch.tanh(halves))


def test_regrouping_a_flattened_axis_yields_a_coarser_group():
    model = _Regrouped()
    x = torch.randn(2, 1, 2, 2)
    spec = derive_spec(model, x)
    (group,) = spec.groups
    assert group.size == 2
    assert spec.repeat("conv.weight", 0) == 2 and spec.repeat("fc.weight", 1) == 1
    assert_invariant(model, spec, x)


class _ProjectedLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 6, proj_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0].mean(dim=0)


@pytest.mark.filterwarnings("ignore:The tensor attributes self.rnn._flat_weights:UserWarning")
def test_a_handler_refusing_a_form_of_its_op_names_op_node_module_and_reason():
    with pytest.raises(UnsupportedModel) as info:
        derive_spec(_ProjectedLSTM(), torch.randn(3, 2, 4))
    details = info.value.details
    assert details["op"] == "aten.lstm.input" and details["node"] == "lstm"  # the call, not a getitem
    assert details["module"] == "rnn (LSTM)"
    assert details["source"].startswith("test_trace.py:") and "self.rnn(x)" in details["source"]
    assert "proj_size" in info.value.message and "permutation_spec" in info.value.message


def test_a_bfloat16_model_is_traced_and_checked_from_a_float32_example():
    model, x = _zoo("resnet")
    expected = derive_spec(model, x).to_json()
    assert derive_spec(model.to(torch.bfloat16), x).to_json() == expected


def test_a_rule_that_cannot_read_its_call_is_a_named_refusal_not_a_crash(monkeypatch):
    from trajx.engine.permutation import trace_ops
    def confused(call):
        raise AttributeError("'NoneType' object has no attribute 'axis'")

    monkeypatch.setitem(trace_ops.HANDLERS, "linear", confused)
    model, x = _zoo("mlp")
    with pytest.raises(UnsupportedModel) as info:
        derive_spec(model, x)
    assert info.value.code == "unsupported_op" and info.value.details["op"] == "aten.linear.default"
    assert "cannot read this call (AttributeError" in info.value.message


@pytest.mark.parametrize("attention, weight, tile", [("fused", "attn.qkv.weight", 3),
                                                     ("multihead", "attn.mha.in_proj_weight", 3)])
def test_zoo_transformer_attention_variants_move_whole_heads(attention, weight, tile):
    model, x = _zoo(f"transformer-{attention}")
    spec = derive_spec(model, x)
    heads = spec.param_groups[f"blocks.0.{weight}"][0]
    assert spec.group(heads).size == 4
    assert (spec.tile(f"blocks.0.{weight}", 0), spec.repeat(f"blocks.0.{weight}", 0)) == (tile, 4)
    out = "attn.out.weight" if attention == "fused" else "attn.mha.out_proj.weight"
    assert spec.param_groups[f"blocks.0.{out}"] == (spec.param_groups["ln_f.weight"][0], heads)


class _TokenConv(nn.Module):
    """Embedding, a 1-d convolution over time, 1-d pooling, a running sum over `dim`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Embedding(11, 6)
        self.conv = nn.Conv1d(6, 5, 3, padding=1)
        self.head = nn.Linear(5, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.embed(tokens).transpose(1, 2)))  # (N, 5, L)
        h = torch.cumsum(F.max_pool1d(h, 2), dim=self.dim)
        return self.head(h.mean(dim=-1))


@pytest.mark.parametrize("dim, channels_move", [(-1, True), (1, False)])
def test_embedding_conv1d_pool1d_and_a_running_sum_that_fixes_its_axis(dim, channels_move):
    model, tokens = _TokenConv(dim), torch.randint(0, 11, (3, 8))
    spec = derive_spec(model, tokens)
    groups = spec.param_groups
    features, channels = groups["embed.weight"][1], groups["conv.weight"][0]
    assert groups["embed.weight"][0] is None and features is not None
    assert groups["conv.weight"] == (channels, features, None) and groups["head.weight"] == (None, channels)
    assert (channels is not None) is channels_move
    if not channels_move:  # a running sum over the channels depends on their order
        assert spec.fixed_axes["conv.weight[0]"] == "op aten.cumsum.default at node 'cumsum'"
    assert_invariant(model, spec, tokens)



def test_pytorch_transformer_encoder_and_rms_norm_move_heads_and_features():
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(5, 16)
            layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.norm = nn.RMSNorm(16)
            self.head = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.encoder(self.embed(x))).mean(1))

    torch.manual_seed(0)
    model, x = Encoder(), torch.randn(3, 6, 5)
    spec = derive_spec(model, x)
    groups = spec.to_json()
    heads = groups["encoder.layers.0.self_attn.in_proj_weight"][0]
    assert heads.startswith("3*") and spec.group(heads.split("*")[1]).size == 4
    assert groups["norm.weight"] == [groups["embed.weight"][0]] != [None]
    assert_invariant(model, spec, x)



@pytest.mark.parametrize("slopes", [1, 6])
def test_prelu_slopes_move_with_their_channels(slopes):
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.PReLU(slopes), nn.Flatten(), nn.Linear(6 * 2 * 2, 3))
    x = torch.randn(3, 2, 4, 4)
    spec = derive_spec(model, x)
    channels = spec.param_groups["0.weight"][0]
    assert channels is not None and spec.param_groups["1.weight"] == ((channels,) if slopes > 1 else (None,))
    assert_invariant(model, spec, x)
