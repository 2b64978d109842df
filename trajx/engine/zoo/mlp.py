"""`mlp`: fully connected layers, optionally normalized, then a linear head.

Parameter names (hidden=[h0, h1], norm="batchnorm"):
    blocks.0.fc.weight [h0, in_features]   blocks.0.norm.{weight,bias,running_mean,...} [h0]
    blocks.1.fc.weight [h1, h0]            head.weight [num_classes, h1]
Inputs are (N, in_features); (N, C, H, W) images are flattened to C*H*W features.
"""

from itertools import pairwise

import torch
from torch import nn

from trajx.arch_configs import MLPConfig
from trajx.engine.zoo.common import make_activation
from trajx.engine.zoo.registry import ArchitectureEntry


class MLPBlock(nn.Module):
    """Linear -> optional norm -> activation."""

    def __init__(self, in_features: int, out_features: int, config: MLPConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        if config.norm == "batchnorm":
            self.norm = nn.BatchNorm1d(out_features)
        elif config.norm == "layernorm":
            self.norm = nn.LayerNorm(out_features)
        else:
            self.norm = nn.Identity()
        self.act = make_activation(config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.fc(x)))


class MLP(nn.Module):
    """Hidden blocks then a linear head; flattens image inputs."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        widths = [config.in_features, *config.hidden]
        self.blocks = nn.ModuleList(MLPBlock(a, b, config) for a, b in pairwise(widths))
        self.head = nn.Linear(widths[-1], config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (N, C, H, W) -> (N, C*H*W); a no-op on (N, in_features)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _example(config: MLPConfig, batch: int) -> torch.Tensor:
    return torch.randn(batch, *(config.input_shape or [config.in_features]))


ENTRY = ArchitectureEntry(MLP, MLPConfig, _example, "fully connected network")
