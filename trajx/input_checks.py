"""Checks of a transfer's inputs on their tensor tables (names and shapes), no bytes read.

The API runs them when a job is created, from the safetensors headers it recorded at
upload, so a mismatch costs an HTTP 422 and not a worker's GPU time. Each failure is an
InvalidInput naming the spec location (`field`), the artifact ref and the tensor.
"""

from collections.abc import Callable, Mapping

from trajx.checkpoint_names import mismatch_hint
from trajx.errors import InvalidInput

# spec location -> that artifact's {tensor name: shape}, read when asked for (one at a time:
# a spec may name a thousand big checkpoints).
Tables = Callable[[str], Mapping[str, list[int]]]


def check_checkpoints_agree(refs: Mapping[str, str], table: Tables) -> None:
    """Every checkpoint (location -> ref) has the tensor names and shapes of the first one;
    each distinct artifact is compared once."""
    if not refs:
        return
    reference_field, reference_ref = next(iter(refs.items()))
    expected = table(reference_field)
    checked = {reference_ref}
    for field, ref in refs.items():
        if ref in checked:
            continue
        checked.add(ref)
        shapes = table(field)
        if shapes == expected:
            continue
        for name in sorted(expected.keys() | shapes.keys()):
            mine, theirs = shapes.get(name), expected.get(name)
            if mine == theirs:
                continue
            if mine is None:
                message = f"{field} ({ref}) lacks tensor {name!r} that {reference_field} has"
            elif theirs is None:
                message = f"{field} ({ref}) has tensor {name!r} that {reference_field} lacks"
            else:
                message = (f"tensor {name!r} has shape {mine} in {field} ({ref}) but "
                           f"{theirs} in {reference_field} ({reference_ref})")
            if mine is None or theirs is None:
                message += mismatch_hint(sorted(expected.keys() - shapes.keys()),
                                         sorted(shapes.keys() - expected.keys()))
            raise InvalidInput(message, code="checkpoint_mismatch", field=field, artifact=ref, tensor=name)


def check_data(refs: Mapping[str, str], table: Tables) -> None:
    """inputs and targets hold the same number of examples; all shards' inputs look alike."""
    feature_shapes = {}
    for field, ref in refs.items():
        shapes = table(field)
        inputs, targets = shapes["inputs"], shapes["targets"]
        if not inputs or not targets or inputs[0] != targets[0]:
            raise InvalidInput(f"{field} ({ref}): 'inputs' {inputs} and 'targets' {targets} "
                               "must have the same leading (example) dimension",
                               code="data_mismatch", field=field, artifact=ref, tensor="inputs")
        feature_shapes[field] = list(inputs[1:])
    first, first_shape = next(iter(feature_shapes.items()), (None, None))
    for field, shape in feature_shapes.items():
        if shape != first_shape:
            raise InvalidInput(f"{field} inputs have example shape {shape}, {first} {first_shape}",
                               code="data_mismatch", field=field, tensor="inputs")


def check_permutation_spec(permutation_spec: Mapping[str, list[str | None]],
                           shapes: Mapping[str, list[int]]) -> None:
    """An explicit permutation spec names tensors of the checkpoints (`shapes`: one
    checkpoint's table), one entry per axis."""
    for name, axes in permutation_spec.items():
        field = f"permutation_spec.{name}"
        if name not in shapes:
            message = f"{field}: the checkpoints have no tensor {name!r}"
        elif len(axes) != len(shapes[name]):
            message = f"{field}: names {len(axes)} axes but tensor {name!r} has shape {shapes[name]}"
        else:
            continue
        raise InvalidInput(message, code="permutation_spec_mismatch", field=field, tensor=name)
