"""Attention of every kind gets a spec in which whole heads move, proven on the model.

Each case derives the spec from the exported graph (which self-checks it in float64),
then permutes a float32 copy with a random draw and checks the outputs do not move.
"""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.engine.invariance import assert_invariant
from trajx.engine.permutation.trace import derive_spec

D_IN, D, LENGTH = 5, 16, 6


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class _Attention(nn.Module):
    """Self-attention in the forms models use: separate or fused q/k/v, SDPA or a
    hand-written softmax, causal or padding masks, grouped-query heads, rotary positions."""

    def __init__(self, heads: int, kv_heads: int, fused: bool, kernel: str, mask: str | None,
                 rotary: bool) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, D // heads
        self.fused, self.kernel, self.mask, self.rotary = fused, kernel, mask, rotary
        kv = kv_heads * self.head_dim
        if fused:
            self.qkv = nn.Linear(D, D + 2 * kv)
        else:
            self.q, self.k, self.v = nn.Linear(D, D), nn.Linear(D, kv), nn.Linear(D, kv)
        self.out = nn.Linear(D, D)
        inv_freq = 1.0 / (100 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _rope(self, t: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(t.shape[-2], dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq[None, :]  # (L, hd/2)
        angles = torch.cat([freqs, freqs], dim=-1)  # (L, hd)
        return t * angles.cos() + _rotate_half(t) * angles.sin()

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        kv = self.kv_heads * self.head_dim
        if self.fused:
            q, k, v = self.qkv(x).split([D, kv, kv], dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.view(n, length, self.heads, self.head_dim).transpose(1, 2)  # (N, h, L, hd)
        k, v = (t.view(n, length, self.kv_heads, self.head_dim).transpose(1, 2) for t in (k, v))
        if self.rotary:
            q, k = self._rope(q), self._rope(k)
        padding = keep[:, None, None, :]  # (N, 1, 1, S): True where a key may be attended to
        if self.kernel == "sdpa":
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=padding if self.mask == "padding" else None,
                is_causal=self.mask == "causal", enable_gqa=self.kv_heads != self.heads)
        else:
            share = self.heads // self.kv_heads  # repeat_kv: each kv head serves `share` query heads
            k, v = (t[:, :, None].expand(n, self.kv_heads, share, length, self.head_dim)
                    .reshape(n, self.heads, length, self.head_dim) for t in (k, v))
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (N, h, L, S)
            if self.mask == "causal":
                future = torch.ones(length, length, dtype=torch.bool).triu(1)
                scores = scores.masked_fill(future, float("-inf"))
            elif self.mask == "padding":
                scores = scores.masked_fill(~padding, float("-inf"))
            y = scores.softmax(dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(n, length, D))


class _Block(nn.Module):
    """Embedding, one pre-LayerNorm attention + MLP block, mean-pooled head."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.embed = nn.Linear(D_IN, D)
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = attention
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        self.head = nn.Linear(D, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = x[..., 0] > -1.5  # a padding mask read off the input
        h = self.embed(x)
        if isinstance(self.attn, nn.MultiheadAttention):
            a = self.ln1(h)
            h = h + self.attn(a, a, a, key_padding_mask=~keep, need_weights=False)[0]
        else:
            h = h + self.attn(self.ln1(h), keep)
        h = h + self.fc2(F.gelu(self.fc1(self.ln2(h))))
        return self.head(h.mean(dim=1))


def _input() -> torch.Tensor:
    x = torch.randn(3, LENGTH, D_IN, generator=torch.Generator().manual_seed(1))
    x[:, 0, 0] = 0.0  # every row keeps at least one key
    return x


CASES = {
    # name: heads, kv_heads, fused, kernel, mask, rotary
    "separate-sdpa": (4, 4, False, "sdpa", None, False),
    "separate-sdpa-causal": (4, 4, False, "sdpa", "causal", False),
    "separate-sdpa-padding": (4, 4, False, "sdpa", "padding", False),
    "fused-sdpa-causal": (4, 4, True, "sdpa", "causal", False),
    "separate-manual": (4, 4, False, "manual", None, False),
    "fused-manual-causal": (4, 4, True, "manual", "causal", False),
    "separate-manual-padding": (4, 4, False, "manual", "padding", False),
    "gqa-sdpa": (4, 2, False, "sdpa", "causal", False),
    "gqa-manual": (4, 2, False, "manual", None, False),
    "gqa-fused-rotary": (4, 2, True, "sdpa", "causal", True),
    "rotary-manual": (4, 4, False, "manual", "causal", True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_heads_move_as_whole_units(case):
    heads, kv_heads, fused, kernel, mask, rotary = CASES[case]
    torch.manual_seed(0)
    model = _Block(_Attention(heads, kv_heads, fused, kernel, mask, rotary))
    x = _input()
    spec = derive_spec(model, x)
    groups = spec.to_json()
    head_dim, share = D // heads, heads // kv_heads
    if fused and share > 1:
        # q, k and v parts of unequal width: no single layout moves heads in all three
        assert groups["attn.qkv.weight"][0] is None and groups["attn.out.weight"][1] is None
    else:
        # a key/value head is the unit; it carries its `share` query heads along
        unit = groups["attn.qkv.weight" if fused else "attn.k.weight"][0]
        name = unit.split("*")[1 if fused else 0]
        assert spec.group(name).size == kv_heads
        if fused:
            assert unit == f"3*{name}*{head_dim}"
        else:
            assert groups["attn.q.weight"][0] == f"{name}*{share * head_dim}"
            assert groups["attn.v.weight"][0] == f"{name}*{head_dim}"
        assert groups["attn.out.weight"][1] == f"{name}*{share * head_dim}"
    stream = groups["embed.weight"][0]
    assert stream is not None and groups["attn.out.weight"][0] == stream
    assert_invariant(model, spec, x)


@pytest.mark.parametrize("rotary", [False, True])
def test_rotary_keeps_the_positions_inside_a_head_fixed(rotary):
    # One head: nothing to move but the features inside it. Without rotary embeddings
    # the query/key features may be permuted together; rotation pairs them by position.
    torch.manual_seed(0)
    model = _Block(_Attention(1, 1, False, "manual", "causal", rotary))
    x = _input()
    spec = derive_spec(model, x)
    inside = spec.param_groups["attn.q.weight"][0]
    assert (inside is None) is rotary
    if not rotary:
        assert spec.param_groups["attn.k.weight"][0] == inside and spec.group(inside).size == D
    assert_invariant(model, spec, x)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_module_moves_whole_heads(batch_first):
    torch.manual_seed(0)
    model = _Block(nn.MultiheadAttention(D, 4, batch_first=True))
    if not batch_first:  # the sequence-first layout goes through other views
        model.attn = nn.MultiheadAttention(D, 4, batch_first=False)
        model.forward = _sequence_first(model)
    x = _input()
    spec = derive_spec(model, x)
    groups = spec.to_json()
    unit = groups["attn.in_proj_weight"][0]
    name = unit.split("*")[1]
    assert unit == f"3*{name}*4" and spec.group(name).size == 4
    assert groups["attn.out_proj.weight"][1] == f"{name}*4"
    assert groups["attn.in_proj_weight"][1] == groups["embed.weight"][0] is not None
    assert_invariant(model, spec, x)


def _sequence_first(model: _Block):
    def forward(x: torch.Tensor) -> torch.Tensor:
        h = model.embed(x).transpose(0, 1)  # (L, N, D)
        a = model.ln1(h)
        h = h + model.attn(a, a, a, need_weights=False)[0]
        h = h + model.fc2(F.gelu(model.fc1(model.ln2(h))))
        return model.head(h.mean(dim=0))
    return forward


def test_multihead_attention_with_its_own_key_and_value_widths():
    class CrossAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(D_IN, D)
            self.memory = nn.Linear(D_IN, 6)
            self.attn = nn.MultiheadAttention(D, 2, kdim=6, vdim=6, batch_first=True)
            self.head = nn.Linear(D, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, m = self.embed(x), torch.tanh(self.memory(x))
            return self.head(self.attn(h, m, m, need_weights=False)[0].mean(1))

    torch.manual_seed(0)
    model, x = CrossAttention(), _input()
    spec = derive_spec(model, x)
    groups = spec.to_json()
    heads = groups["attn.q_proj_weight"][0]
    assert heads is not None and groups["attn.k_proj_weight"][0] == heads == groups["attn.v_proj_weight"][0]
    assert groups["attn.k_proj_weight"][1] == groups["memory.weight"][0] is not None
    assert_invariant(model, spec, x)
