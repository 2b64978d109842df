"""Data for the engine: a dataset of (inputs, targets), seeded mini-batch plans, the loss.

Targets decide the task: an integer dtype means class ids (cross-entropy), a float
dtype means regression values (mean squared error).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Dataset:
    """Aligned `inputs` [N, ...] and `targets` [N] (class ids) or [N, ...] (values)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(
                f"inputs has {len(self.inputs)} samples but targets has {len(self.targets)}"
            )

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def is_classification(self) -> bool:
        return not self.targets.is_floating_point()

    def batch(self, indices: torch.Tensor, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at `indices`, moved to `device`."""
        return self.inputs[indices].to(device), self.targets[indices].to(device)

    def chunks(self, batch_size: int, device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every sample once, in order, `batch_size` at a time (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.inputs[start:start + batch_size].to(device), \
                self.targets[start:start + batch_size].to(device)


class BatchSampler:
    """Index batches drawn without replacement from reshuffled epochs of a dataset.

    Every draw comes from the caller's `generator`, so a seeded plan is reproducible.
    A batch never spans two epochs; `batch_size` larger than the data means all of it.
    """

    def __init__(self, size: int, batch_size: int, generator: torch.Generator) -> None:
        if size < 1:
            raise ValueError("cannot draw batches from an empty dataset")
        self.size = size
        self.batch_size = min(batch_size, size)
        self.generator = generator
        self._order = torch.empty(0, dtype=torch.int64)
        self._next = 0

    def draw(self) -> torch.Tensor:
        if self._next + self.batch_size > len(self._order):
            self._order = torch.randperm(self.size, generator=self.generator)
            self._next = 0
        batch = self._order[self._next:self._next + self.batch_size]
        self._next += self.batch_size
        return batch

    def draw_many(self, count: int) -> list[torch.Tensor]:
        return [self.draw() for _ in range(count)]


def task_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for integer class ids, mean squared error for float targets."""
    if targets.is_floating_point():
        return F.mse_loss(outputs, targets.reshape(outputs.shape))
    return F.cross_entropy(outputs, targets)
