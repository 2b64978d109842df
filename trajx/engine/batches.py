"""Data for the engine: a dataset of (inputs, targets), seeded mini-batch plans.

What the targets mean (class ids, values, token labels) is the architecture's task
(`trajx.engine.losses`).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """Some samples on a device; `attention_mask` [N, L] when the data has one."""

    inputs: torch.Tensor
    targets: torch.Tensor
    attention_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class Dataset:
    """Aligned `inputs` [N, ...] and `targets` [N, ...], optionally an `attention_mask`
    [N, L] (1 = a real token, 0 = padding) for token inputs."""

    inputs: torch.Tensor
    targets: torch.Tensor
    attention_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(
                f"inputs has {len(self.inputs)} samples but targets has {len(self.targets)}"
            )
        if self.attention_mask is not None and self.attention_mask.shape != self.inputs.shape:
            raise ValueError(f"attention_mask {list(self.attention_mask.shape)} is not shaped like "
                             f"inputs {list(self.inputs.shape)}")

    def __len__(self) -> int:
        return len(self.inputs)

    def batch(self, indices: torch.Tensor | slice, device: torch.device | str) -> Batch:
        """The samples at `indices`, moved to `device`."""
        mask = None if self.attention_mask is None else self.attention_mask[indices].to(device)
        return Batch(self.inputs[indices].to(device), self.targets[indices].to(device), mask)

    def chunks(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        """Every sample once, in order, `batch_size` at a time (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(slice(start, start + batch_size), device)


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

