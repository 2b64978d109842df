"""Pieces shared by the zoo's architectures."""

from typing import Literal

from torch import nn

Activation = Literal["relu", "gelu", "tanh", "silu"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def make_activation(name: Activation) -> nn.Module:
    """A fresh activation module for a config's `activation` name."""
    return _ACTIVATIONS[name]()
