"""Tiny real setups for engine tests: sklearn digits with the zoo's `mlp` and a `cnn`
with BatchNorm, their specs derived by tracing.

The source is trained for real (about a second on CPU) with a small learning rate, the
regime where adding the source's displacement to another init (Naive) fails.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

from trajx.engine.batches import Dataset
from trajx.engine.permutation.spec import PermutationSpec
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.zoo import build_model, example_input, init_state_dict
from trajx.io import save_tensors

MLP = ("mlp", {"in_features": 64, "hidden": [128, 128], "num_classes": 10})
CNN = ("cnn", {"in_channels": 1, "image_size": 8, "channels": [16, 16], "fc": [32],
               "batchnorm": True, "pooling": "flatten"})


def digits(as_images: bool = False) -> tuple[Dataset, Dataset]:
    """(train, test): the first 1400 digits and the remaining 397, inputs scaled to [0, 1]."""
    data = load_digits()
    inputs = torch.tensor(data.data, dtype=torch.float32) / 16.0
    if as_images:
        inputs = inputs.reshape(-1, 1, 8, 8)
    targets = torch.tensor(data.target, dtype=torch.int64)
    return Dataset(inputs[:1400], targets[:1400]), Dataset(inputs[1400:], targets[1400:])


def train(model: nn.Module, data: Dataset, epochs: int, lr: float, seed: int = 0,
          every_epoch: bool = False) -> list[dict]:
    """SGD with momentum; returns the checkpoints before and after training (with
    `every_epoch`, after each epoch too)."""
    checkpoints = [state(model)]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), 64):
            batch = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(data.inputs[batch]), data.targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if every_epoch:
            checkpoints.append(state(model))
    if not every_epoch:
        checkpoints.append(state(model))
    return checkpoints


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


@dataclass
class Setup:
    arch: tuple[str, dict]
    spec: PermutationSpec
    source: list[dict]
    train: Dataset
    test: Dataset

    def model(self) -> nn.Module:
        return build_model(*self.arch)

    def init(self, seed: int) -> dict[str, torch.Tensor]:
        return init_state_dict(*self.arch, seed)

    def write(self, directory: Path) -> dict[str, Path]:
        """θ⁰, θᵀ and both data shards as safetensors files; returns their paths."""
        paths = {"theta0": directory / "theta0.safetensors", "thetaT": directory / "thetaT.safetensors",
                 "train": directory / "train.safetensors", "test": directory / "test.safetensors"}
        save_tensors(paths["theta0"], self.source[0])
        save_tensors(paths["thetaT"], self.source[-1])
        for key, data in (("train", self.train), ("test", self.test)):
            save_tensors(paths[key], {"inputs": data.inputs, "targets": data.targets})
        return paths


def _setup(arch: tuple[str, dict], as_images: bool, epochs: int, lr: float) -> Setup:
    train_data, test_data = digits(as_images)
    model = build_model(*arch)
    model.load_state_dict(init_state_dict(*arch, 0))
    spec = derive_spec(model, example_input(*arch))
    return Setup(arch, spec, train(model, train_data, epochs, lr), train_data, test_data)


def mlp_setup() -> Setup:
    return _setup(MLP, as_images=False, epochs=10, lr=0.005)


def cnn_setup() -> Setup:
    return _setup(CNN, as_images=True, epochs=2, lr=0.02)
