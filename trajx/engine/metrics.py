"""Evaluation of a model on held-out data: mean loss, and accuracy where the task has one."""

import torch
from torch import nn

from trajx.engine.batches import Dataset
from trajx.engine.losses import CLASSES_OR_VALUES, Task


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int, device: torch.device | str,
             task: Task = CLASSES_OR_VALUES) -> dict[str, float]:
    """`{"loss", "accuracy"}` of `model` in eval mode (accuracy only where `task` has one).

    Both are means over the task's units (samples, or counted tokens) of the whole dataset.
    """
    model.eval()
    loss_sum, correct, units = 0.0, 0, 0
    for batch in data.chunks(batch_size, device):
        score = task.score(task.outputs(model, batch), batch.targets)
        loss_sum += score.loss_sum
        correct += score.correct or 0
        units += score.units
    units = max(units, 1)
    result = {"loss": loss_sum / units}
    if task.has_accuracy(data):
        result["accuracy"] = correct / units
    return result
