"""Permutation specs: which axes of which parameters share one permutation.

A `PermutationSpec` lists every state-dict entry with, per axis, the name of the
permutation group acting on it (or None: the axis is never permuted, e.g. input
features and output classes). A permutation is a dict `group name -> LongTensor`
with `perm[g][i]` = index of the source unit that lands at position i.

An axis may hold a group *repeated*: after flattening a (C, H, W) activation the next
Linear's input axis has C*H*W entries, channel-major, so permuting the C channels moves
blocks of H*W features. Such an axis records `repeat = H*W`. An axis may also hold its
group *tiled*: a fused q/k/v projection's output axis is (3, heads, head_dim), and the
heads move alike in each of the three; it records `tile = 3` (and `repeat = head_dim`).
Its length is `tile * group.size * repeat` and it is permuted by
`expand_index(perm[g], repeat, tile)`. Always permute axes through `permute_axis` (or
`apply_permutation`) and size cost matrices by `group.size`, never by the axis length.
In JSON a repeated axis is written `"name*16"`, a tiled one `"3*name*16"`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from trajx.errors import UnsupportedModel

Permutation = dict[str, torch.Tensor]
StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Axis:
    """One axis `dim` of the state-dict entry `param`: `tile` copies of its group, each unit
    `repeat` times blockwise."""

    param: str
    dim: int
    repeat: int = 1
    tile: int = 1


@dataclass(frozen=True)
class PermutationGroup:
    """Axes that must be permuted together; all have length `size`."""

    name: str
    size: int
    axes: tuple[Axis, ...]


@dataclass(frozen=True)
class PermutationSpec:
    """Groups plus, for every state-dict entry, the group of each axis (None = fixed).

    `fixed_axes` (`"param[dim]" -> why`), filled by spec derivation, says what keeps each
    parameter axis in place that could otherwise have moved (an op, the model's output);
    `self_check` is how the spec passed its self-check (`selfcheck.SelfCheck`); `labels`
    a readable label per group name (`group_labels`: `h.0.mlp`, `h.0.attn.heads`, `residual`).
    """

    groups: tuple[PermutationGroup, ...]
    param_groups: Mapping[str, tuple[str | None, ...]]
    fixed_axes: Mapping[str, str] = field(default_factory=dict, compare=False)
    self_check: Any = field(default=None, compare=False)
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)

    def group(self, name: str) -> PermutationGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"no permutation group named {name!r}")

    def identity(self, device: torch.device | str = "cpu") -> Permutation:
        return {g.name: torch.arange(g.size, device=device) for g in self.groups}

    def random(self, generator: torch.Generator) -> Permutation:
        return {g.name: torch.randperm(g.size, generator=generator) for g in self.groups}

    def repeat(self, param: str, dim: int) -> int:
        """How many times axis `dim` of `param` repeats its group blockwise (1 if not)."""
        return self._layouts.get((param, dim), (1, 1))[0]

    def tile(self, param: str, dim: int) -> int:
        """How many copies of its group axis `dim` of `param` holds one after another (1 if one)."""
        return self._layouts.get((param, dim), (1, 1))[1]

    @cached_property
    def _layouts(self) -> dict[tuple[str, int], tuple[int, int]]:
        return {(a.param, a.dim): (a.repeat, a.tile) for g in self.groups for a in g.axes
                if (a.repeat, a.tile) != (1, 1)}

    def to_json(self) -> dict[str, list[str | None]]:
        """`param -> group per axis`, written `"[tile*]group[*repeat]"`."""
        return {
            name: [format_group_ref(g, self.repeat(name, dim), self.tile(name, dim)) for dim, g in enumerate(axes)]
            for name, axes in self.param_groups.items()
        }


def require_groups(spec: PermutationSpec, method: str) -> None:
    """Refuse a matching method on a spec with no permutation group: its result would be
    exactly the Naive one. Raises UnsupportedModel(code="no_permutation_groups") naming
    what fixed the axes that could have moved (`spec.fixed_axes`)."""
    if spec.groups:
        return
    # ops first: the model's own inputs and outputs fix axes in every model
    reasons = sorted(spec.fixed_axes.items(), key=lambda item: "the model's" in item[1])
    shown = "; ".join(f"{axis}: {why}" for axis, why in reasons[:6])
    more = f" (and {len(spec.fixed_axes) - 6} more)" if len(spec.fixed_axes) > 6 else ""
    what = f"what fixed them: {shown}{more}" if shown else "no parameter axis can move"
    raise UnsupportedModel(
        f"method {method!r} needs at least one permutation group, but every parameter axis of "
        f"this model stays in place ({what}); use method 'naive' or give an explicit "
        "permutation_spec", code="no_permutation_groups", method=method,
        fixed_axes=dict(spec.fixed_axes))


def format_group_ref(group: str | None, repeat: int = 1, tile: int = 1) -> str | None:
    """The JSON reference `"[tile*]group[*repeat]"` (None for a fixed axis)."""
    if group is None:
        return None
    return f"{f'{tile}*' if tile != 1 else ''}{group}{f'*{repeat}' if repeat != 1 else ''}"


def parse_group_ref(ref: str) -> tuple[str, int, int]:
    """Split a JSON group reference `"[tile*]name[*repeat]"` into (name, repeat, tile).

    A leading or trailing part made of digits is a count; the name is what remains.
    Raises ValueError when a count is not a positive integer or the name is empty.
    """
    parts = ref.split("*")
    counts = [1, 1]  # repeat, tile
    if len(parts) > 1 and parts[-1].isdigit():
        counts[0] = int(parts.pop())
    if len(parts) > 1 and parts[0].isdigit():
        counts[1] = int(parts.pop(0))
    if len(parts) != 1 or not parts[0] or min(counts) < 1:
        raise ValueError(f"group reference {ref!r}: expected 'name', 'name*<positive int>' "
                         "or '<positive int>*name*<positive int>'")
    return parts[0], counts[0], counts[1]


def expand_index(index: torch.Tensor, repeat: int, tile: int = 1) -> torch.Tensor:
    """Index of an axis holding `tile` copies of a group, each unit `repeat` times blockwise,
    from the group's permutation `index`."""
    if repeat != 1:
        inner = torch.arange(repeat, device=index.device)
        index = (index[:, None] * repeat + inner).reshape(-1)
    if tile != 1:
        outer = torch.arange(tile, device=index.device) * index.numel()
        index = (outer[:, None] + index).reshape(-1)
    return index


def permute_axis(tensor: torch.Tensor, dim: int, index: torch.Tensor, repeat: int = 1,
                 tile: int = 1) -> torch.Tensor:
    """`tensor` with axis `dim` reordered by a group permutation `index` (tiled, repeated blockwise)."""
    return select_along(tensor, dim, expand_index(index.to(tensor.device), repeat, tile))


def select_along(tensor: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """`tensor.index_select(dim, index)`, gathered through a 2-D or 3-D view of `tensor`.

    On the CPU, torch's index_select is about 10x slower on the last axis of a tensor of
    three or more dimensions than on a 2-D one (columns of a stack of weight matrices:
    14 ms against 1.4 ms for 150 of 512 columns of 20 of them); the view gathers the
    same elements the fast way.
    """
    if tensor.ndim < 3 or not tensor.is_contiguous():
        return tensor.index_select(dim, index)
    dim %= tensor.ndim
    shape = tensor.shape
    lead, trail = shape[:dim].numel(), shape[dim + 1:].numel()
    flat = tensor.view(lead, shape[dim]) if trail == 1 else tensor.view(lead, shape[dim], trail)
    return flat.index_select(1, index).view(*shape[:dim], index.numel(), *shape[dim + 1:])


def spec_from_param_groups(param_groups: Mapping[str, tuple[str | None, ...]],
                           shapes: Mapping[str, tuple[int, ...]]) -> PermutationSpec:
    """Build a spec from `param -> group per axis`, checking every group has one size.

    A group may be written `"[tile*]name[*repeat]"` (see the module docstring); its size
    is then the axis length divided by `tile * repeat`. Raises ValueError naming the parameter when an
    axis count, a repeat or a group size does not fit.
    """
    axes: dict[str, list[Axis]] = {}
    sizes: dict[str, int] = {}
    names: dict[str, tuple[str | None, ...]] = {}
    for param, groups in param_groups.items():
        shape = shapes[param]
        if len(groups) != len(shape):
            raise ValueError(
                f"{param}: spec names {len(groups)} axes but the tensor has shape {tuple(shape)}"
            )
        parsed = [None if ref is None else parse_group_ref(ref) for ref in groups]
        names[param] = tuple(None if ref is None else ref[0] for ref in parsed)
        for dim, ref in enumerate(parsed):
            if ref is None:
                continue
            name, repeat, tile = ref
            if shape[dim] % (repeat * tile):
                raise ValueError(f"{param} axis {dim} has size {shape[dim]}, not a multiple of {repeat * tile}")
            size = shape[dim] // (repeat * tile)
            if sizes.setdefault(name, size) != size:
                raise ValueError(
                    f"group {name!r}: {param} axis {dim} holds {size} units, "
                    f"other axes in the group hold {sizes[name]}"
                )
            axes.setdefault(name, []).append(Axis(param, dim, repeat, tile))
    groups = tuple(PermutationGroup(n, sizes[n], tuple(a)) for n, a in axes.items())
    return PermutationSpec(groups, names)


def apply_permutation(spec: PermutationSpec, perm: Permutation, state: StateDict) -> dict[str, torch.Tensor]:
    """Return `state` with every permuted axis reindexed by its group's permutation."""
    return {name: permute_param(spec, perm, name, tensor) for name, tensor in state.items()}


def permute_param(spec: PermutationSpec, perm: Permutation, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` (parameter `name`) with every permuted axis reindexed by its group's permutation."""
    for dim, group in enumerate(spec.param_groups.get(name, ())):
        if group is not None:
            tensor = permute_axis(tensor, dim, perm[group], spec.repeat(name, dim), spec.tile(name, dim))
    return tensor


def invert(perm: Permutation) -> Permutation:
    """The inverse permutation: applying `perm` then `invert(perm)` is the identity."""
    return {g: torch.argsort(p) for g, p in perm.items()}
