"""`transformer`: a small pre-LayerNorm encoder over patches or token features.

Attention (`attention`) is written with separate q/k/v/out Linear layers by default, or
one fused qkv Linear through scaled_dot_product_attention (`fused`), or
nn.MultiheadAttention (`multihead`). Parameter names:
    embed.proj.{weight,bias}   Conv2d(in_channels, d_model, patch, stride=patch) for
                               input="patches" (N, C, H, W); Linear(d_in, d_model) for
                               input="tokens" (N, seq_len, d_in)
    pos_embed [1, L, d_model]  (L = tokens, +1 with pool="cls")   cls_token [1, 1, d_model]
    blocks.{i}.ln1.*  blocks.{i}.attn.{q,k,v,out}.{weight,bias} (separate)
                      blocks.{i}.attn.{qkv,out}.{weight,bias} (fused)
                      blocks.{i}.attn.mha.{in_proj_weight,in_proj_bias,out_proj.*} (multihead)
    blocks.{i}.ln2.*  blocks.{i}.mlp.fc1.*  blocks.{i}.mlp.fc2.*
    ln_f.{weight,bias}  head.{weight,bias}
The residual stream (d_model) is one permutation group, each block's MLP hidden layer
another, each block's attention heads a third (whole heads move; q, k and v units
inside a head keep their order).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from trajx.arch_configs import Activation, TransformerConfig
from trajx.engine.zoo.common import make_activation
from trajx.engine.zoo.registry import ArchitectureEntry


class PatchEmbedding(nn.Module):
    """Non-overlapping patches through one strided Conv2d."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(config.in_channels, config.d_model, config.patch_size, config.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, d, h, w) -> (N, h*w, d)


class TokenEmbedding(nn.Module):
    """Token features through one Linear."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.d_in, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with explicit q/k/v/out projections."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # (N, nh, L, hd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (N, nh, L, L)
        y = scores.softmax(dim=-1) @ v  # (N, nh, L, hd)
        return self.out(y.transpose(1, 2).flatten(2))  # (N, L, d_model)


class FusedSelfAttention(nn.Module):
    """Multi-head self-attention with one qkv projection (nanoGPT's c_attn) and SDPA."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)  # (3, N, nh, L, hd)
        q, k, v = heads.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # (N, nh, L, hd)
        return self.out(y.transpose(1, 2).flatten(2))  # (N, L, d_model)


class MultiheadSelfAttention(nn.Module):
    """nn.MultiheadAttention on (N, L, d_model), as self-attention."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(d_model, num_heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


ATTENTION = {"separate": SelfAttention, "fused": FusedSelfAttention, "multihead": MultiheadSelfAttention}


class MLP(nn.Module):
    """fc1 -> activation -> fc2."""

    def __init__(self, d_model: int, hidden: int, activation: Activation) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + attn(ln1 x), then x + mlp(ln2 x)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = ATTENTION[config.attention](config.d_model, config.num_heads)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config.d_model, config.mlp_hidden, config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Embedding, position embedding, pre-LayerNorm blocks, final LayerNorm, pooling, head."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.embed = PatchEmbedding(config) if config.input == "patches" else TokenEmbedding(config)
        self.use_cls = config.pool == "cls"
        tokens = config.num_tokens + (1 if self.use_cls else 0)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, config.d_model) * 0.02)
        if self.use_cls:
            self.cls_token = nn.Parameter(torch.randn(1, 1, config.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)  # (N, L, d_model)
        if self.use_cls:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        x = x[:, 0] if self.use_cls else x.mean(dim=1)  # (N, d_model)
        return self.head(x)


def _example(config: TransformerConfig, batch: int) -> torch.Tensor:
    if config.input == "tokens":
        return torch.randn(batch, config.seq_len, config.d_in)
    return torch.randn(batch, config.in_channels, config.image_size, config.image_size)


ENTRY = ArchitectureEntry(Transformer, TransformerConfig, _example, "pre-LayerNorm transformer encoder")
