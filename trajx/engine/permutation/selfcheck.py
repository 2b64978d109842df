"""The self-check that proves a permutation spec on its model.

Outputs must not change when the spec's groups are permuted. The check feeds float64
parameters and inputs, randomized so that a symmetric init (LayerNorm weights all one,
BatchNorm statistics 0 and 1) cannot hide a wrong group. A model may still compute parts
in lower precision (Llama's RMSNorm casts to float32, rotary tables are float32 buffers):
the check records the floating dtypes its ops return, and its tolerance follows the
least precise of them (`tolerance`). When the output changes by more than that, the
check is run again with every op computed in float64 (`_AllFloat64`): a spec that holds
there is right and the model's own rounding was at fault; one that fails there is wrong,
and the refusal names the group and the parameter that breaks it.
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from trajx.engine.permutation.group_labels import group_labels
from trajx.engine.permutation.spec import (
    Axis,
    Permutation,
    PermutationSpec,
    invert,
    permute_axis,
    permute_param,
)
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
    BatchNorm statistics are 0 and 1: a wrong permutation of them would go unnoticed); other
    tensors copied as they are, since the check permutes its state in place."""
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            out[name] = tensor.detach().clone()
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


FLOAT64_TOLERANCE = 1e-7  # relative to the output scale, for a model computing in float64
ROUNDING_ULPS = 64  # a lower precision's tolerance: this many units in its last place


def tolerance(dtype: torch.dtype) -> float:
    """The self-check's tolerance (relative to the output scale) for a model whose least
    precise op computes in `dtype`: 1e-7 in float64, 64 ulps (7.6e-6) in float32."""
    return max(FLOAT64_TOLERANCE, ROUNDING_ULPS * torch.finfo(dtype).eps)


@dataclass(frozen=True)
class SelfCheck:
    """How a spec passed: the largest output change over `tolerance` (relative to the
    output `scale`), with ops computing in `computes_in` (float64 after a recheck)."""

    ratio: float
    tolerance: float
    computes_in: str
    scale: float
    rechecked_in_float64: bool = False


class _Precisions(TorchDispatchMode):
    """Records the floating dtypes the ops of a run return."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.dtypes.update(t.dtype for t in tree_leaves(out)
                           if isinstance(t, torch.Tensor) and t.is_floating_point())
        return out

    def least_precise(self) -> torch.dtype:
        return max(self.dtypes, key=lambda d: torch.finfo(d).eps, default=torch.float64)


class _AllFloat64(TorchDispatchMode):
    """Runs every op in float64: lower-precision floating arguments and dtype requests
    (a cast to float32, a float32 table) are raised to float64."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        def up(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
                return value.double()
            if isinstance(value, torch.dtype) and value.is_floating_point:
                return torch.float64
            return value

        return func(*tree_map(up, args), **tree_map(up, kwargs or {}))


def _call(model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor) -> Any:
    # tie_weights=False: tied entries are permuted alike (their axes were joined), and
    # the check must run on exactly the state it was given.
    return functional_call(model, dict(state), (x,), tie_weights=False, strict=False)


def _non_identity(size: int, generator: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(size, generator=generator)
    if size > 1 and bool((perm == torch.arange(size)).all()):
        perm = torch.roll(perm, 1)
    return perm


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Tensors a model makes without a dtype (`torch.full((), finfo(x.dtype).min)`, a mask
    value) in `dtype`: float64 ones would not fit float32."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


_MAX_BLAME_TRIES = 64  # forward passes spent naming the parameter at fault


class _Run:
    """Output changes of one model, state and input, measured in one precision mode."""

    def __init__(self, model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor,
                 mode: Callable[[], Any]) -> None:
        self.model, self.state, self.x, self.mode = model, state, x, mode
        self.precisions = _Precisions()
        with self.mode(), self.precisions:
            self.reference = [t.double() for t in tree_leaves(_call(model, state, x))]
        self.scale = max([1.0, *(float(t.abs().max()) for t in self.reference if t.numel())])

    def change(self, state: Mapping[str, torch.Tensor]) -> float:
        """The largest output change, relative to the output scale."""
        with self.mode():
            outputs = tree_leaves(_call(self.model, state, self.x))
        return max((float((o.double() - r).abs().max()) for o, r in zip(outputs, self.reference)
                    if r.numel()), default=0.0) / self.scale


def check_spec(model: nn.Module, spec: PermutationSpec, example_input: torch.Tensor,
               generator: torch.Generator, atol: float | None = None) -> SelfCheck:
    """Prove `spec` on `model`: outputs must not change when its groups are permuted.

    Runs in eval mode on randomized float64 parameters: every group is permuted at once
    by a random non-identity permutation drawn from `generator`, twice (a broken group
    cannot be compensated by the others for random draws). The tolerance, relative to
    the output scale, is `atol` or else follows the least precise dtype the model's ops
    compute in (`tolerance`). Past it, the check is rerun with every op in float64
    (see the module docstring). Raises UnsupportedModel(code="spec_self_check_failed")
    naming the group, the parameter at fault when one is found, and the change as a
    ratio to the tolerance.
    """
    state = _randomized_state(model.state_dict(), generator)
    x = like_model(model, example_input)
    x = x.double() if x.is_floating_point() else x
    draws = [{g.name: _non_identity(g.size, generator) for g in spec.groups} for _ in range(2)]
    with eval_mode(model), torch.no_grad(), _default_dtype(torch.float64):
        native = _Run(model, state, x, nullcontext)
        dtype = native.precisions.least_precise()
        tol = atol if atol is not None else tolerance(dtype)
        worst = max((_permuted_change(native, spec, d) for d in draws), default=0.0)
        if worst <= tol:
            return SelfCheck(worst / tol, tol, str(dtype).removeprefix("torch."), native.scale)
        if dtype != torch.float64:
            exact = _Run(model, state, x, _AllFloat64)
            tol64 = atol if atol is not None else FLOAT64_TOLERANCE
            worst64 = max(_permuted_change(exact, spec, d) for d in draws)
            if worst64 <= tol64:
                return SelfCheck(worst64 / tol64, tol64, "float64", exact.scale, rechecked_in_float64=True)
            native, tol = exact, tol64
        blame = _blame(native, spec, draws, tol)
    label = group_labels(spec.groups).get(blame.group)
    precision = (f"the model computes in {str(dtype).removeprefix('torch.')}, and the check fails even "
                 "with every op computed in float64, so " if dtype != torch.float64 else "")
    raise UnsupportedModel(
        f"permutation spec self-check failed: permuting group {blame.group!r}"
        f"{f' ({label})' if label else ''}{blame.where} changed the "
        f"model's output by {blame.error:.3g} of its scale {native.scale:.3g}, {blame.error / tol:.3g} times "
        f"the tolerance {tol:.2g}; {precision}the spec is at fault: {blame.advice}",
        code="spec_self_check_failed", group=blame.group, parameter=blame.parameter,
        max_error=blame.error * native.scale, ratio=blame.error / tol, tolerance=tol,
        computes_in=str(dtype).removeprefix("torch."),
    )


@dataclass(frozen=True)
class _Blame:
    group: str
    error: float
    parameter: str | None = None
    where: str = ""
    advice: str = "give an explicit permutation_spec for this model"


def _blame(run: _Run, spec: PermutationSpec, draws: list[dict[str, torch.Tensor]], tol: float) -> _Blame:
    """The first group whose permutation alone breaks the output, and the parameter
    axis at fault: one that must not move with it, or one of its size that must."""
    identity = spec.identity()
    for group in spec.groups:
        for draw in draws:
            perm = draw[group.name]
            error = _permuted_change(run, spec, {**identity, group.name: perm})
            if error > tol:
                return _culprit_parameter(run, spec, group.name, perm, tol, error) or _Blame(group.name, error)
    worst = max(_permuted_change(run, spec, d) for d in draws)
    return _Blame("several groups together", worst)


def _culprit_parameter(run: _Run, spec: PermutationSpec, name: str, perm: torch.Tensor,
                       tol: float, error: float) -> _Blame | None:
    group = spec.group(name)
    tries = 0
    for skip in group.axes:  # an axis that must not move: the check passes without it
        if tries >= _MAX_BLAME_TRIES:
            return None
        tries += 1
        if run.change(_permute_group(run.state, [a for a in group.axes if a != skip], perm)) <= tol:
            return _Blame(name, error, skip.param, f" (axis {skip.dim} of {skip.param!r} must not move with it)",
                          f"give an explicit permutation_spec with {skip.param!r} axis {skip.dim} fixed (null)")
    members = {(a.param, a.dim) for a in group.axes}
    for param, tensor in run.state.items():  # an axis that must move with it: the check passes with it
        for dim, size in enumerate(tensor.shape):
            moves = spec.param_groups.get(param)
            if (param, dim) in members or size != group.size or (moves and moves[dim]):
                continue
            if tries >= _MAX_BLAME_TRIES:
                return None
            tries += 1
            if run.change(_permute_group(run.state, [*group.axes, Axis(param, dim)], perm)) <= tol:
                return _Blame(name, error, param, f" (axis {dim} of {param!r} must move with it)",
                              f"give an explicit permutation_spec putting {param!r} axis {dim} in group {name!r}")
    return None


def _permuted_change(run: _Run, spec: PermutationSpec, perm: Permutation) -> float:
    """`run.change` with its state permuted by `perm`: the state is permuted in place, one
    parameter at a time, and put back after (gathers are exact), so the check holds one
    float64 copy of the model, not two."""
    _permute_in_place(spec, perm, run.state)
    try:
        return run.change(run.state)
    finally:
        _permute_in_place(spec, invert(perm), run.state)


def _permute_in_place(spec: PermutationSpec, perm: Permutation, state: Mapping[str, torch.Tensor]) -> None:
    for name, tensor in state.items():
        if any(group is not None for group in spec.param_groups.get(name, ())):
            tensor.copy_(permute_param(spec, perm, name, tensor))


def _permute_group(state: Mapping[str, torch.Tensor], axes: list[Axis], perm: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
    out = dict(state)
    for axis in axes:
        out[axis.param] = permute_axis(out[axis.param], axis.dim, perm, axis.repeat, axis.tile)
    return out
