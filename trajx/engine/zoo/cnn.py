"""`cnn`: a VGG-style conv stack like the paper's Conv8, then fully connected layers.

Conv8 (the default): 3x3 convs of 64, 64 | 128, 128 | 256, 256 | 512, 512 channels with a
2x2 max-pool after every `pool_every` convs, then Linear 256, 256 and the head. `width`
scales every conv and fc width. Parameter names (batchnorm=True):
    features.{i}.conv.{weight,bias} [c_i, c_{i-1}, 3, 3]   features.{i}.bn.{weight,bias,running_mean,...}
    fc.{j}.{weight,bias}                                    head.{weight,bias} [num_classes, last]
With pooling="flatten" the first fc takes c_last * s * s features (s = image_size / 2**pools),
channel-major; with pooling="avgpool" it takes c_last.
"""

from itertools import pairwise

import torch
from torch import nn

from trajx.arch_configs import CNNConfig, scaled
from trajx.engine.zoo.common import make_activation
from trajx.engine.zoo.registry import ArchitectureEntry


class ConvBlock(nn.Module):
    """3x3 conv -> optional BatchNorm -> activation -> optional 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, config: CNNConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels) if config.batchnorm else nn.Identity()
        self.act = make_activation(config.activation)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class CNN(nn.Module):
    """Conv blocks, flatten or global average pool, fc layers, linear head."""

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        channels = [config.in_channels] + [scaled(c, config.width) for c in config.channels]
        self.features = nn.ModuleList(
            ConvBlock(a, b, (i + 1) % config.pool_every == 0, config)
            for i, (a, b) in enumerate(pairwise(channels))
        )
        self.flatten = config.pooling == "flatten"
        side = config.image_size // 2**config.num_pools
        widths = [channels[-1] * (side * side if self.flatten else 1)]
        widths += [scaled(w, config.width) for w in config.fc]
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))
        self.act = make_activation(config.activation)
        self.head = nn.Linear(widths[-1], config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.features:
            x = block(x)
        # (N, C, s, s) -> (N, C*s*s) channel-major, or (N, C) by global average pooling
        x = x.flatten(1) if self.flatten else x.mean(dim=(2, 3))
        for layer in self.fc:
            x = self.act(layer(x))
        return self.head(x)


def _example(config: CNNConfig, batch: int) -> torch.Tensor:
    return torch.randn(batch, config.in_channels, config.image_size, config.image_size)


ENTRY = ArchitectureEntry(CNN, CNNConfig, _example, "VGG-style conv stack (Conv8)")
