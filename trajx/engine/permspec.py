"""Permutation specs: which axes of which parameters share one permutation.

A `PermutationSpec` lists every state-dict entry with, per axis, the name of the
permutation group acting on it (or None: the axis is never permuted, e.g. input
features and output classes). A permutation is a dict `group name -> LongTensor`
with `perm[g][i]` = index of the source unit that lands at position i.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch

Permutation = dict[str, torch.Tensor]
StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Axis:
    """One axis `dim` of the state-dict entry `param`."""

    param: str
    dim: int


@dataclass(frozen=True)
class PermutationGroup:
    """Axes that must be permuted together; all have length `size`."""

    name: str
    size: int
    axes: tuple[Axis, ...]


@dataclass(frozen=True)
class PermutationSpec:
    """Groups plus, for every state-dict entry, the group of each axis (None = fixed)."""

    groups: tuple[PermutationGroup, ...]
    param_groups: Mapping[str, tuple[str | None, ...]]

    def group(self, name: str) -> PermutationGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"no permutation group named {name!r}")

    def identity(self, device: torch.device | str = "cpu") -> Permutation:
        return {g.name: torch.arange(g.size, device=device) for g in self.groups}

    def random(self, generator: torch.Generator) -> Permutation:
        return {g.name: torch.randperm(g.size, generator=generator) for g in self.groups}

    def to_json(self) -> dict[str, list[str | None]]:
        return {name: list(axes) for name, axes in self.param_groups.items()}


def spec_from_param_groups(param_groups: Mapping[str, tuple[str | None, ...]],
                           shapes: Mapping[str, tuple[int, ...]]) -> PermutationSpec:
    """Build a spec from `param -> group per axis`, checking every group has one size."""
    axes: dict[str, list[Axis]] = {}
    sizes: dict[str, int] = {}
    for param, groups in param_groups.items():
        shape = shapes[param]
        if len(groups) != len(shape):
            raise ValueError(
                f"{param}: spec names {len(groups)} axes but the tensor has shape {tuple(shape)}"
            )
        for dim, name in enumerate(groups):
            if name is None:
                continue
            if sizes.setdefault(name, shape[dim]) != shape[dim]:
                raise ValueError(
                    f"group {name!r}: {param} axis {dim} has size {shape[dim]}, "
                    f"other axes in the group have size {sizes[name]}"
                )
            axes.setdefault(name, []).append(Axis(param, dim))
    groups = tuple(PermutationGroup(n, sizes[n], tuple(a)) for n, a in axes.items())
    return PermutationSpec(groups, {p: tuple(g) for p, g in param_groups.items()})


def apply_permutation(spec: PermutationSpec, perm: Permutation, state: StateDict) -> dict[str, torch.Tensor]:
    """Return `state` with every permuted axis reindexed by its group's permutation."""
    out = {}
    for name, tensor in state.items():
        for dim, group in enumerate(spec.param_groups.get(name, ())):
            if group is not None:
                tensor = torch.index_select(tensor, dim, perm[group].to(tensor.device))
        out[name] = tensor
    return out


def invert(perm: Permutation) -> Permutation:
    """The inverse permutation: applying `perm` then `invert(perm)` is the identity."""
    return {g: torch.argsort(p) for g, p in perm.items()}
