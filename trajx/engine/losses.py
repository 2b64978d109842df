"""What a model is trained to do: its loss, its accuracy and the data it takes.

The zoo gives every architecture a `Task` (`trajx.engine.zoo.task_for`); the transfer,
the evaluation and the data checks ask it instead of assuming classes:

- `ClassesOrValues` (the zoo's models, Hugging Face sequence and image classifiers):
  integer targets [N] are class ids (cross-entropy, accuracy), float targets are
  regression values (mean squared error, no accuracy).
- `NextToken` (causal language models): `targets` [N, L] are the labels of `inputs`
  [N, L] in Hugging Face's convention (usually the token ids themselves); the logits at
  position i predict label i+1. Label -100 is ignored (padding, prompt tokens).
- `MaskedTokens` (masked language models): `targets` [N, L] hold the original token at
  each masked position and -100 everywhere else; the logits at position i predict label i.

Loss and accuracy of the token tasks are over counted tokens, not over sequences.
A model may return a tensor or a Hugging Face output with `.logits`; an
`attention_mask` in the data is passed on by keyword.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trajx.engine.batches import Batch, Dataset
from trajx.errors import InvalidInput

IGNORE = -100  # Hugging Face's label for "no loss here"


@dataclass(frozen=True)
class Score:
    """One batch evaluated: summed loss over `units` (samples or tokens), correct predictions."""

    loss_sum: float
    correct: int | None
    units: int


class Task:
    """Base: runs the model on a batch; subclasses define loss, score and data checks."""

    name = "task"

    def outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The model's logits (or values) on `batch`."""
        extra = {} if batch.attention_mask is None else {"attention_mask": batch.attention_mask}
        out = model(batch.inputs, **extra)
        return getattr(out, "logits", out)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, outputs: torch.Tensor, targets: torch.Tensor) -> Score:
        raise NotImplementedError

    def has_accuracy(self, data: Dataset) -> bool:
        raise NotImplementedError

    def check_data(self, data: Dataset, outputs: torch.Tensor, what: str) -> None:
        """Raise InvalidInput when `data` (whose first samples gave `outputs`) does not fit."""
        raise NotImplementedError


class ClassesOrValues(Task):
    """Class ids -> cross-entropy and accuracy; float targets -> mean squared error."""

    name = "classes-or-values"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.is_floating_point():
            return F.mse_loss(outputs, targets.reshape(outputs.shape))
        return F.cross_entropy(outputs, targets)

    def score(self, outputs: torch.Tensor, targets: torch.Tensor) -> Score:
        correct = None if targets.is_floating_point() else int((outputs.argmax(dim=1) == targets).sum())
        return Score(float(self.loss(outputs, targets)) * len(targets), correct, len(targets))

    def has_accuracy(self, data: Dataset) -> bool:
        return not data.targets.is_floating_point()

    def check_data(self, data: Dataset, outputs: torch.Tensor, what: str) -> None:
        if data.targets.is_floating_point():
            per_sample = tuple(outputs.shape[1:])
            if outputs[0].numel() != data.targets[0].numel():
                raise InvalidInput(
                    f"{what}: float targets of shape {list(data.targets.shape)} are regression values, "
                    f"but the model outputs {list(per_sample)} per sample",
                    code="data_mismatch", artifact=what, tensor="targets",
                    targets_shape=list(data.targets.shape), output_shape=list(per_sample))
            return
        if outputs.ndim != 2 or data.targets.ndim != 1:
            raise InvalidInput(
                f"{what}: integer targets {list(data.targets.shape)} are class ids, but the model "
                f"outputs {list(outputs.shape[1:])} per sample (expected one score per class)",
                code="data_mismatch", artifact=what, tensor="targets",
                targets_shape=list(data.targets.shape), output_shape=list(outputs.shape[1:]))
        _check_range(data.targets, outputs.shape[1], what, "targets", "classes")


class _Tokens(Task):
    """Token-level cross-entropy over labels that are not IGNORE; `shift` for next-token."""

    shift = False

    def _aligned(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shift:  # logits at i predict label i+1
            outputs, targets = outputs[:, :-1], targets[:, 1:]
        return outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, labels = self._aligned(outputs, targets)
        if not bool((labels != IGNORE).any()):  # a batch of padding only: no signal, not NaN
            return logits.sum() * 0.0
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)

    def score(self, outputs: torch.Tensor, targets: torch.Tensor) -> Score:
        logits, labels = self._aligned(outputs, targets)
        counted = labels != IGNORE
        units = int(counted.sum())
        loss_sum = float(F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum"))
        correct = int(((logits.argmax(dim=-1) == labels) & counted).sum())
        return Score(loss_sum, correct, units)

    def has_accuracy(self, data: Dataset) -> bool:
        return True

    def check_data(self, data: Dataset, outputs: torch.Tensor, what: str) -> None:
        inputs, targets = data.inputs, data.targets
        if inputs.is_floating_point() or inputs.ndim != 2:
            raise InvalidInput(
                f"{what}: a {self.name} model takes integer token ids [N, L]; "
                f"'inputs' is {list(inputs.shape)} of dtype {str(inputs.dtype).removeprefix('torch.')}",
                code="data_mismatch", artifact=what, tensor="inputs", inputs_shape=list(inputs.shape))
        if targets.is_floating_point() or targets.shape != inputs.shape:
            raise InvalidInput(
                f"{what}: a {self.name} model needs integer 'targets' shaped like 'inputs' "
                f"{list(inputs.shape)} (labels, {IGNORE} = ignored); got {list(targets.shape)} "
                f"of dtype {str(targets.dtype).removeprefix('torch.')}",
                code="data_mismatch", artifact=what, tensor="targets",
                targets_shape=list(targets.shape), inputs_shape=list(inputs.shape))
        vocab = outputs.shape[-1]
        _check_range(inputs, vocab, what, "inputs", "tokens in the vocabulary")
        _check_range(targets[targets != IGNORE], vocab, what, "targets", "tokens in the vocabulary")
        _, labels = self._aligned(outputs.new_empty(*targets.shape, 1), targets)
        if not bool((labels != IGNORE).any()):
            raise InvalidInput(f"{what}: every label is {IGNORE} (ignored): nothing to learn from",
                               code="data_mismatch", artifact=what, tensor="targets")


class NextToken(_Tokens):
    name = "causal-lm"
    shift = True


class MaskedTokens(_Tokens):
    name = "masked-lm"


def _check_range(values: torch.Tensor, count: int, what: str, tensor: str, kind: str) -> None:
    if values.numel() == 0:
        return
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= count:
        raise InvalidInput(
            f"{what}: {tensor} range over [{low}, {high}] but the model has {count} {kind} "
            f"(valid ids 0..{count - 1})",
            code="target_out_of_range", artifact=what, tensor=tensor, min=low, max=high, num_classes=count)


CLASSES_OR_VALUES = ClassesOrValues()
# A program names its task (trajx.program.document.TASKS): name -> task.
TASKS_BY_NAME: dict[str, Task] = {task.name: task for task in (CLASSES_OR_VALUES, NextToken(), MaskedTokens())}
