"""Pieces shared by the zoo's architectures."""

from torch import nn

from trajx.arch_configs import Activation

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def make_activation(name: Activation) -> nn.Module:
    """A fresh activation module for a config's `activation` name."""
    return _ACTIVATIONS[name]()
