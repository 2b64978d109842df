"""Evaluation of a model on held-out data: mean loss, and accuracy for class targets."""

import torch
from torch import nn

from trajx.engine.batches import Dataset, task_loss


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int,
             device: torch.device | str) -> dict[str, float]:
    """`{"loss", "accuracy"}` (accuracy only for class targets) of `model` in eval mode.

    The loss is the sample-weighted mean over the whole dataset.
    """
    model.eval()
    loss_sum, correct = 0.0, 0
    for inputs, targets in data.chunks(batch_size, device):
        outputs = model(inputs)
        loss_sum += float(task_loss(outputs, targets)) * len(inputs)
        if data.is_classification:
            correct += int((outputs.argmax(dim=1) == targets).sum())
    result = {"loss": loss_sum / len(data)}
    if data.is_classification:
        result["accuracy"] = correct / len(data)
    return result
