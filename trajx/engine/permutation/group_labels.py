"""Readable labels for permutation groups, from the module paths of their parameters.

A derived group is named after its first parameter axis (`P_transformer.wte.weight_1`),
which explicit specs refer to, so names stay as they are; its label says what it is:
the module all its parameters live in (`transformer.h.0.mlp`), `.heads` when it moves
attention heads (blocks of a projection's output rows), `residual` (under their common
module, if any: `stages.1.residual`) for a stream through three or more numbered blocks,
or two and a module outside them (the embedding), and else the module of its first
parameter. Labels follow state-dict order only, so they are stable across runs.
"""

from trajx.engine.permutation.spec import PermutationGroup


def group_labels(groups: tuple[PermutationGroup, ...]) -> dict[str, str]:
    """Group name -> readable label, unique (`#2`, `#3` appended on a repeat)."""
    labels: dict[str, str] = {}
    seen: dict[str, int] = {}
    for group in groups:
        label = _label(group)
        seen[label] = seen.get(label, 0) + 1
        labels[group.name] = label if seen[label] == 1 else f"{label}#{seen[label]}"
    return labels


def _label(group: PermutationGroup) -> str:
    modules = [axis.param.split(".")[:-1] for axis in group.axes]
    common = ".".join(modules[0][:min(_shared(modules[0], path) for path in modules)])
    blocks = {_block(path) for path in modules}
    if len(blocks - {None}) >= 3 or (len(blocks - {None}) >= 2 and None in blocks):
        return f"{common}.residual" if common else "residual"
    # inside one block: the module it lives in; between modules: the one its first parameter is in
    name = common if len(blocks) == 1 and common else ".".join(modules[0])
    heads = any(axis.repeat > 1 and axis.dim == 0 for axis in group.axes)
    return (name or group.axes[0].param) + (".heads" if heads else "")


def _block(path: list[str]) -> str | None:
    """The innermost numbered block a module lies in (`h.0` of `h.0.mlp.c_fc`, `stages.1.0`
    of `stages.1.0.conv1`), None outside any."""
    numbered = [i for i, part in enumerate(path) if part.isdigit()]
    return ".".join(path[:numbered[-1] + 1]) if numbered else None


def _shared(a: list[str], b: list[str]) -> int:
    """How many leading components `a` and `b` share."""
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count
