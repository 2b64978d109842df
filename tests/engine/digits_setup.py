"""Tiny real setups for engine tests: sklearn digits, an MLP and a BatchNorm CNN.

The source is trained for real (a second on CPU) with a small learning rate, the regime
where adding the source's displacement to another init (Naive) fails.
"""

from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import nn

from trajx.engine.batches import Dataset
from trajx.engine.permspec import PermutationSpec, spec_from_param_groups

MLP_GROUPS = {
    "0.weight": ("h1", None), "0.bias": ("h1",),
    "2.weight": ("h2", "h1"), "2.bias": ("h2",),
    "4.weight": (None, "h2"), "4.bias": (None,),
}
CNN_GROUPS = {
    "0.weight": ("c1", None, None, None), "0.bias": ("c1",),
    "1.weight": ("c1",), "1.bias": ("c1",), "1.running_mean": ("c1",), "1.running_var": ("c1",),
    "1.num_batches_tracked": (),
    "3.weight": ("c2", "c1", None, None), "3.bias": ("c2",),
    "4.weight": ("c2",), "4.bias": ("c2",), "4.running_mean": ("c2",), "4.running_var": ("c2",),
    "4.num_batches_tracked": (),
    "8.weight": (None, "c2"), "8.bias": (None,),
}


def digits(as_images: bool = False) -> tuple[Dataset, Dataset]:
    data = load_digits()
    inputs = torch.tensor(data.data, dtype=torch.float32) / 16.0
    if as_images:
        inputs = inputs.reshape(-1, 1, 8, 8)
    targets = torch.tensor(data.target, dtype=torch.int64)
    return Dataset(inputs[:1400], targets[:1400]), Dataset(inputs[1400:], targets[1400:])


def mlp(seed: int, width: int = 128) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def bn_cnn(seed: int, width: int = 16) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def spec_of(model: nn.Module, groups: dict) -> PermutationSpec:
    return spec_from_param_groups(groups, {n: tuple(t.shape) for n, t in model.state_dict().items()})


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def train(model: nn.Module, data: Dataset, epochs: int, lr: float, seed: int = 0) -> list[dict]:
    """SGD with momentum; returns the checkpoints before and after training."""
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
    checkpoints.append(state(model))
    return checkpoints


@dataclass
class Setup:
    model_fn: object
    spec: PermutationSpec
    source: list[dict]
    train: Dataset
    test: Dataset


def mlp_setup() -> Setup:
    train_data, test_data = digits()
    model = mlp(0)
    return Setup(mlp, spec_of(model, MLP_GROUPS), train(model, train_data, 10, 0.005),
                 train_data, test_data)


def cnn_setup() -> Setup:
    train_data, test_data = digits(as_images=True)
    model = bn_cnn(0)
    return Setup(bn_cnn, spec_of(model, CNN_GROUPS), train(model, train_data, 2, 0.02),
                 train_data, test_data)
