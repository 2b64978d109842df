"""Merge an explicit permutation spec (the job spec's JSON) into a derived one.

The explicit spec maps a state-dict name to one group reference per axis (`"name"`,
`"name*repeat"`, `"tile*name*repeat"` or null for a fixed axis). Each entry it names replaces the derived
entry; entries it does not name keep what tracing found. The merged spec is
self-checked by the caller like any derived one.
"""

from collections.abc import Mapping, Sequence

from trajx.engine.permutation.spec import parse_group_ref
from trajx.errors import InvalidInput

GroupRefs = tuple[str | None, ...]


def merge_explicit(derived: Mapping[str, GroupRefs], explicit: Mapping[str, Sequence[str | None]],
                   shapes: Mapping[str, tuple[int, ...]]) -> dict[str, GroupRefs]:
    """`derived` with every entry named in `explicit` replaced.

    Raises InvalidInput(code="invalid_permutation_spec") naming the entry when it is
    not a state-dict name of the model, gives the wrong number of axes, or holds a
    malformed group reference.
    """
    merged = dict(derived)
    for param, refs in explicit.items():
        field = f"permutation_spec.{param}"
        if param not in shapes:
            raise InvalidInput(
                f"permutation_spec names {param!r}, which is not a parameter or buffer of the model",
                code="invalid_permutation_spec", field=field,
            )
        shape = tuple(shapes[param])
        if len(refs) != len(shape):
            raise InvalidInput(
                f"permutation_spec[{param!r}] lists {len(refs)} axes but the tensor has shape {shape}",
                code="invalid_permutation_spec", field=field,
            )
        for ref in refs:
            if ref is not None:
                try:
                    parse_group_ref(ref)
                except ValueError as exc:
                    raise InvalidInput(str(exc), code="invalid_permutation_spec", field=field) from None
        merged[param] = tuple(refs)
    return merged


def names_every_entry(explicit: Mapping[str, Sequence[str | None]], shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether `explicit` sets every state-dict entry (then nothing is left to derive)."""
    return all(name in explicit for name in shapes)
