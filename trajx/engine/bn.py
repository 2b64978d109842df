"""BatchNorm statistics: never transferred, re-estimated on data for every model kept."""

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that track running statistics."""
    return [m for m in model.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats]


@torch.no_grad()
def reestimate_batch_norm(model: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    """Reset every BatchNorm's running stats and recompute them as the plain average
    (momentum=None) over forward passes in train mode on `inputs`; leaves the model
    in eval mode. A model without BatchNorm is only switched to eval mode.

    Every model a job compares (baselines included) goes through this one treatment, on
    the same batches, so differences between them are not differences in statistics.
    """
    layers = batch_norm_layers(model)
    if layers:
        momenta = [layer.momentum for layer in layers]
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
        model.train()
        for batch in inputs:
            model(batch)
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    model.eval()


def reestimated_state(model: nn.Module, state: Mapping[str, torch.Tensor],
                      inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` loaded into `model` (left loaded), BatchNorm re-estimated on `inputs`; the full
    state on CPU."""
    model.load_state_dict(state)
    reestimate_batch_norm(model, inputs)
    return {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}
