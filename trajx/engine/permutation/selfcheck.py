"""The self-check that proves a permutation spec on its model.

Outputs must not change when the spec's groups are permuted. The check runs in
float64 on randomized parameters, so that neither rounding nor a symmetric init
(LayerNorm weights all one, BatchNorm statistics 0 and 1) can hide a wrong group.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._pytree import tree_leaves

from trajx.engine.permutation.spec import PermutationSpec, apply_permutation
from trajx.errors import UnsupportedModel


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own mode.

    The flag is set on each module rather than through `model.eval()`, which the module
    of an exported program refuses (its graph was captured in one mode already)."""
    modes = [(m, m.training) for m in model.modules()]
    for module, _ in modes:
        module.training = False
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def like_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`x` on the model's device and, if floating, in its floating dtype (first float entry)."""
    tensor = next((t for t in model.state_dict().values() if t.is_floating_point()), None)
    if tensor is None:
        return x
    return x.to(tensor.device, tensor.dtype) if x.is_floating_point() else x.to(tensor.device)


def _randomized_state(state: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Float64 copies of `state` with every unit made distinct (a fresh LayerNorm is all ones,
    BatchNorm statistics are 0 and 1: a wrong permutation of them would go unnoticed)."""
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            out[name] = tensor
            continue
        value = tensor.detach().double()
        noise = torch.randn(value.shape, generator=generator, dtype=torch.float64).to(value.device)
        if bool((value > 0).all()):  # scales and variances stay positive
            value = value * torch.exp(0.2 * noise)
        else:
            spread = float(value.std()) if value.numel() > 1 and float(value.std()) > 0 else 0.1
            value = value + 0.5 * spread * noise
        out[name] = value
    return out


def _call(model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor) -> Any:
    # tie_weights=False: tied entries are permuted alike (their axes were joined), and
    # the check must run on exactly the state it was given.
    return functional_call(model, dict(state), (x,), tie_weights=False, strict=False)


def _non_identity(size: int, generator: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(size, generator=generator)
    if size > 1 and bool((perm == torch.arange(size)).all()):
        perm = torch.roll(perm, 1)
    return perm


def check_spec(model: nn.Module, spec: PermutationSpec, example_input: torch.Tensor,
               generator: torch.Generator, atol: float = 1e-7) -> None:
    """Prove `spec` on `model`: outputs must not change when its groups are permuted.

    Runs in float64 and eval mode on randomized parameters: every group is permuted at
    once by a random non-identity permutation drawn from `generator`, twice (a broken
    group cannot be compensated by the others for random draws). Only when that fails
    are the groups tried one by one, to name the culprit. Raises
    UnsupportedModel(code="spec_self_check_failed") naming the group and the largest
    output change (relative to the output scale, tolerance `atol`).
    """
    state = _randomized_state(model.state_dict(), generator)
    x = like_model(model, example_input)
    x = x.double() if x.is_floating_point() else x
    with eval_mode(model), torch.no_grad():
        reference = [t.double() for t in tree_leaves(_call(model, state, x))]
        scale = max([1.0, *(float(t.abs().max()) for t in reference if t.numel())])

        def change(perm: dict[str, torch.Tensor]) -> float:
            outputs = tree_leaves(_call(model, apply_permutation(spec, perm, state), x))
            return max((float((o.double() - r).abs().max()) for o, r in zip(outputs, reference)
                        if r.numel()), default=0.0)

        draws = [{g.name: _non_identity(g.size, generator) for g in spec.groups} for _ in range(2)]
        if all(change(draw) <= atol * scale for draw in draws):
            return
        identity = spec.identity()
        culprits = ((g.name, change({**identity, g.name: draw[g.name]}))
                    for g in spec.groups for draw in draws)
        label, error = next(((n, e) for n, e in culprits if e > atol * scale), (None, 0.0))
        if label is None:
            label, error = "several groups together", max(change(d) for d in draws)
    raise UnsupportedModel(
        f"permutation spec self-check failed: permuting group {label!r} changed the "
        f"model's output by {error:.3g} (output scale {scale:.3g})",
        code="spec_self_check_failed", group=label, max_error=error,
    )
