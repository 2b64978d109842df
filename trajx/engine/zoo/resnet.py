"""`resnet`: CIFAR-style ResNet-20 (3 stages of 3 blocks, 16/32/64 channels) and
ResNet-18 (4 stages of 2 blocks, 64/128/256/512 channels), basic blocks with BatchNorm.

A 3x3 stem (no max-pool), blocks whose first conv strides 2 from the second stage on,
a 1x1 conv + BatchNorm shortcut where the shape changes, global average pooling and a
linear head. `width` multiplies every channel count. Parameter names:
    stem.conv.weight  stem.bn.{weight,bias,running_mean,running_var,num_batches_tracked}
    stages.{s}.{b}.conv1.weight  .bn1.*  .conv2.weight  .bn2.*
    stages.{s}.0.shortcut.conv.weight  stages.{s}.0.shortcut.bn.*   (where the shape changes)
    head.{weight,bias}
Convs carry no bias (BatchNorm follows). The residual stream of a stage is one
permutation group; each block's inner channels are another.
"""

import torch
from torch import nn
from torch.nn import functional as F

from trajx.arch_configs import RESNET_LAYOUTS, ResNetConfig, scaled
from trajx.engine.zoo.registry import ArchitectureEntry


class ConvBN(nn.Module):
    """Conv (no bias) followed by BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        reshaped = stride != 1 or in_channels != out_channels
        self.shortcut = ConvBN(in_channels, out_channels, 1, stride) if reshaped else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, stages of basic blocks, global average pool, linear head."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        blocks, channels = RESNET_LAYOUTS[config.depth]
        channels = [scaled(c, config.width) for c in channels]
        self.stem = ConvBN(config.in_channels, channels[0], 3, 1)
        stages = []
        in_channels = channels[0]
        for index, (count, out_channels) in enumerate(zip(blocks, channels)):
            first_stride = 1 if index == 0 else 2
            stage = [BasicBlock(in_channels, out_channels, first_stride)]
            stage += [BasicBlock(out_channels, out_channels, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_channels, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = self.stages(x)
        x = x.mean(dim=(2, 3))  # global average pool: (N, C, H, W) -> (N, C)
        return self.head(x)


def _example(config: ResNetConfig, batch: int) -> torch.Tensor:
    return torch.randn(batch, config.in_channels, config.image_size, config.image_size)


ENTRY = ArchitectureEntry(ResNet, ResNetConfig, _example, "CIFAR-style ResNet-20 / ResNet-18")
