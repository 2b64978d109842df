"""The demo's source model: an `mlp` from the zoo trained on scikit-learn's digits.

Digits ship with scikit-learn (1797 8×8 images, 10 classes), so the demo needs no
download. Pixels are scaled to [0, 1]; a seeded stratified split holds out 20%.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trajx.engine.zoo import build_model, init_state_dict
from trajx.io import save_tensors

ARCH = "mlp"
MLP_CONFIG = {"in_features": 64, "hidden": [128, 128], "num_classes": 10}

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DigitsSplit:
    train_inputs: torch.Tensor  # (N, 64) float32 in [0, 1]
    train_targets: torch.Tensor  # (N,) int64
    eval_inputs: torch.Tensor
    eval_targets: torch.Tensor

    def save_shards(self, out_dir: Path) -> tuple[Path, Path]:
        """Write `train.safetensors` and `heldout.safetensors` data shards (`inputs`, `targets`)."""
        train, held_out = out_dir / "train.safetensors", out_dir / "heldout.safetensors"
        save_tensors(train, {"inputs": self.train_inputs, "targets": self.train_targets})
        save_tensors(held_out, {"inputs": self.eval_inputs, "targets": self.eval_targets})
        return train, held_out


def load_digits_split(seed: int = 0, held_out: float = 0.2) -> DigitsSplit:
    """Digits, split into train and held-out parts (stratified, seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_eval, y_train, y_eval = train_test_split(
        digits.data / 16.0, digits.target, test_size=held_out, random_state=seed, stratify=digits.target)
    as_inputs = lambda a: torch.as_tensor(a, dtype=torch.float32)
    as_targets = lambda a: torch.as_tensor(a, dtype=torch.int64)
    return DigitsSplit(as_inputs(x_train), as_targets(y_train), as_inputs(x_eval), as_targets(y_eval))


def train_source(split: DigitsSplit, seed: int = 0, epochs: int = 20, lr: float = 0.01,
                 batch_size: int = 64) -> tuple[StateDict, StateDict, float]:
    """Train the zoo `mlp` from its seeded init with SGD; return (θ⁰, θᵀ, seconds).

    A small learning rate keeps the run in the regime where the displacement θᵀ − θ⁰
    only works from its own init, so Naive transfer visibly falls behind FGMT.
    """
    theta0 = init_state_dict(ARCH, MLP_CONFIG, seed)
    model = build_model(ARCH, MLP_CONFIG)
    model.load_state_dict(theta0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(split.train_targets), generator=generator)
        for batch in order.split(batch_size):
            optimizer.zero_grad()
            loss_fn(model(split.train_inputs[batch]), split.train_targets[batch]).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    theta_t = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return theta0, theta_t, seconds


@torch.no_grad()
def accuracy(state: StateDict, split: DigitsSplit) -> float:
    """Held-out accuracy of the zoo `mlp` with weights `state`."""
    model = build_model(ARCH, MLP_CONFIG)
    model.load_state_dict(state)
    model.eval()
    predictions = model(split.eval_inputs).argmax(dim=1)
    return (predictions == split.eval_targets).float().mean().item()
