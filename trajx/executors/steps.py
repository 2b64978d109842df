"""The optimizer step of each checkpoint of an `average` job, and where it was read.

In order: the spec's `steps`; else a `step` entry in every file's safetensors metadata;
else a step in every reference's file name (`step-0880`, `step_12`, `step=5`,
`ckpt.step0880`); else the checkpoints' positions 0 … n − 1. A source that gives a step
to some checkpoints and not others is refused (naming the first without one): guessing
would silently change which checkpoints a window holds.
"""

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from safetensors import SafetensorError, safe_open

from trajx.errors import InvalidInput
from trajx.executors.registry import Resolve

_STEP_IN_NAME = re.compile(r"(?:^|[^a-z0-9])step[-_=]?(\d{1,12})(?![0-9])", re.IGNORECASE)
_METADATA_KEY = "step"


def checkpoint_steps(refs: Sequence[str], resolve: Resolve, given: Sequence[int] | None) -> tuple[list[int], str]:
    """(steps, source) for the checkpoints `refs`: source is `spec`, `metadata`, `names` or `positions`."""
    if given is not None:
        return list(given), "spec"
    for source, read in (("metadata", lambda i, ref: _from_metadata(resolve(ref), f"checkpoints[{i}]")),
                         ("names", lambda i, ref: _from_name(ref))):
        found = [read(i, ref) for i, ref in enumerate(refs)]
        if all(step is not None for step in found):
            return found, source
        if any(step is not None for step in found):
            missing = found.index(None)
            where = "safetensors metadata 'step'" if source == "metadata" else "file names (step-0880)"
            raise InvalidInput(f"checkpoints[{missing}]: carries no step while others carry one in their "
                               f"{where}; give 'steps' in the spec", code="invalid_params",
                               field=f"checkpoints[{missing}]")
    return list(range(len(refs))), "positions"


def _from_name(ref: str) -> int | None:
    match = _STEP_IN_NAME.search(PurePosixPath(ref).name)
    return int(match.group(1)) if match else None


def _from_metadata(path: Path, what: str) -> int | None:
    try:
        with safe_open(str(path), framework="pt") as file:
            value = (file.metadata() or {}).get(_METADATA_KEY)
    except (SafetensorError, OSError):
        return None  # the header check names an unreadable file
    if value is None:
        return None
    if not value.isdigit() or len(value) > 12:
        raise InvalidInput(f"{what}: safetensors metadata step={value!r} is not a step number",
                           code="invalid_params", field=what)
    return int(value)
