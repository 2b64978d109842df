"""How a user's checkpoint names become the architecture's: wrapper prefixes and explicit strips.

Training code wraps models: DDP and DataParallel add `module.`, `torch.compile` adds
`_orig_mod.`, Lightning keeps the model under an attribute (usually `model.`). Those
prefixes are stripped only when *every* name carries them, so a model whose own names
merely start that way for some tensors is left alone. `model.` is also the first
component of many Hugging Face names, so it is a default only for PyTorch `.pt` files
(where Lightning puts it), never for safetensors that `save_pretrained` wrote.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trajx.client.errors import InvalidLocalInput

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
TRAINER_PREFIXES = ("model.",)


@dataclass(frozen=True)
class KeyMapping:
    """What the user asked for: `--key` (where a nested `.pt` keeps its state dict, dots walk
    nested dicts) and `--strip-prefix` (stripped from every name that has it)."""

    key: str | None = None
    strip_prefixes: tuple[str, ...] = ()


AS_IS = KeyMapping()  # auto-detection only


def plan_renames(names: Iterable[str], mapping: KeyMapping,
                 auto_prefixes: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """`old name -> new name` for the names that change, and one note per rule considered.

    An explicit prefix that no name has is a note, not an error: a spec's `--strip-prefix`
    applies to all its checkpoints, and only some may carry it. Raises InvalidLocalInput
    when two names would collide after stripping.
    """
    current = {name: name for name in names}
    notes = []
    for prefix in mapping.strip_prefixes:
        hits = [old for old, new in current.items() if new.startswith(prefix)]
        if not hits:
            examples = sorted(current.values())[:3]
            notes.append(f"no tensor name starts with {prefix!r}, nothing stripped (names look like {examples})")
            continue
        for old in hits:
            current[old] = current[old][len(prefix):]
        notes.append(f"stripped {prefix!r} from {len(hits)} of {len(current)} names")
    stripped = True
    while stripped and current:  # `module._orig_mod.` needs two rounds
        stripped = False
        for prefix in auto_prefixes:
            if all(new.startswith(prefix) and len(new) > len(prefix) for new in current.values()):
                current = {old: new[len(prefix):] for old, new in current.items()}
                notes.append(f"stripped {prefix!r} (every one of the {len(current)} names had it)")
                stripped = True
    if len(set(current.values())) != len(current):
        raise InvalidLocalInput("stripping the prefixes would give two tensors the same name: "
                                "pass --strip-prefix for the exact prefix to remove")
    return {old: new for old, new in current.items() if old != new}, notes
