"""Say what is wrong when a checkpoint's tensor names do not match an architecture's.

Torch-free, so the worker's errors and any torch-free caller phrase it the same way:
the closest expected name for each unexpected one, and the prefix that explains the
whole mismatch when there is one (a DDP `module.`, a Lightning `model.`, ...).
"""

import difflib
from collections.abc import Sequence


def closest_names(unexpected: Sequence[str], expected: Sequence[str],
                  limit: int = 5) -> dict[str, str]:
    """unexpected name -> the most similar expected name, for up to `limit` names."""
    pairs = {}
    for name in unexpected[:limit]:
        match = difflib.get_close_matches(name, expected, n=1, cutoff=0.5)
        if match:
            pairs[name] = match[0]
    return pairs


def explaining_prefix(missing: Sequence[str], unexpected: Sequence[str]) -> tuple[str, str] | None:
    """(prefix to strip, prefix to add) that turns every unexpected name into a missing one.

    The strip side covers wrapper prefixes (`module.fc.weight` -> `fc.weight`); the add
    side a checkpoint of an inner module (`fc.weight` -> `backbone.fc.weight`).
    """
    if not missing or len(missing) != len(unexpected):
        return None
    wanted = set(missing)
    for name in unexpected:
        for target in missing:
            if name.endswith(target):
                strip, add = name[: len(name) - len(target)], ""
            elif target.endswith(name):
                strip, add = "", target[: len(target) - len(name)]
            else:
                continue
            if (strip or add) and all(
                    n.startswith(strip) and add + n[len(strip):] in wanted for n in unexpected):
                return strip, add
        break  # the first unexpected name fixes the candidates
    return None


def mismatch_hint(missing: Sequence[str], unexpected: Sequence[str]) -> str:
    """One sentence for a `checkpoint_mismatch` error; empty when nothing helps."""
    prefix = explaining_prefix(missing, unexpected)
    if prefix is not None:
        strip, add = prefix
        if strip and not add:
            return (f" Every unexpected name starts with {strip!r}: strip it "
                    f"(trajx upload --strip-prefix {strip}).")
        return f" The names match after replacing the prefix {strip!r} with {add!r}."
    pairs = closest_names(unexpected, missing)
    if not pairs:
        return ""
    return " Closest expected names: " + "; ".join(f"{u!r} -> {e!r}" for u, e in pairs.items()) + "."
