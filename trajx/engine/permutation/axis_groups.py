"""Read permutation groups off linked axes: one group per parameter axis, named, laid out.

After the tracer has linked every axis (`AtomUnion`), each parameter axis is a sequence
of factor classes. A class can be a group when it is live (see `AtomUnion.is_live`); a
spec gives an axis one group, tiled over the factors before it and repeated over the
factors after it.
"""

import math
from collections.abc import Mapping

from trajx.engine.permutation.axis_links import PARAM, AtomUnion
from trajx.engine.permutation.spec import format_group_ref

GroupRefs = tuple[str | None, ...]


def one_group_per_axis(axes: AtomUnion, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Leave each parameter axis at most one live factor (the outermost): the spec format
    gives an axis one group. Fixing only ever removes candidates, so this settles."""
    changed = True
    while changed:
        changed = False
        for param, shape in shapes.items():
            for dim in range(len(shape)):
                if (PARAM + param, dim) not in axes:
                    continue
                roots = [axes.root(a) for a in axes.leaves((PARAM + param, dim)) if axes.is_live(a)]
                distinct = list(dict.fromkeys(roots))
                if distinct and roots.count(distinct[0]) > 1:
                    axes.fix_atom(distinct[0], f"axis {dim} of {param} holds it twice")
                    changed = True
                for root in distinct[1:]:
                    axes.fix_atom(root, f"axis {dim} of {param} already moves with an outer factor")
                    changed = True


def groups_from_axes(axes: AtomUnion, shapes: Mapping[str, tuple[int, ...]]
                     ) -> tuple[dict[str, GroupRefs], dict[str, str]]:
    """`param -> group reference per axis` (groups named after their first parameter axis),
    and for every parameter axis that could have moved but does not, why it is fixed."""
    names: dict[int, str] = {}
    refs: dict[str, GroupRefs] = {}
    fixed: dict[str, str] = {}
    for param, shape in shapes.items():
        entry: list[str | None] = []
        for dim in range(len(shape)):
            endpoint = (PARAM + param, dim)
            leaves = axes.leaves(endpoint) if endpoint in axes else []
            live = [i for i, a in enumerate(leaves) if axes.is_live(a)]
            if not live:
                entry.append(None)
                reasons = [axes.why_fixed(a) for a in leaves if axes.atom_size(a) > 1]
                if shape[dim] > 1 and any(reasons):
                    fixed[f"{param}[{dim}]"] = next(r for r in reasons if r)
                continue
            at = live[0]
            name = names.setdefault(axes.root(leaves[at]), f"P_{param}_{dim}")
            tile = math.prod(axes.atom_size(a) for a in leaves[:at])
            repeat = math.prod(axes.atom_size(a) for a in leaves[at + 1:])
            entry.append(format_group_ref(name, repeat, tile))
        refs[param] = tuple(entry)
    return refs, fixed
