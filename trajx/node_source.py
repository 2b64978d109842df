"""Where a graph node came from, as `torch.export` records it, for refusals (no torch).

Every node of an exported graph carries `nn_module_stack` (the modules it ran inside, a
dict in memory, `"key,path,class;..."` once serialized) and `stack_trace` (the Python
frames that called it). A refusal names the innermost module and the innermost source
line outside torch itself: the model's own code, or the library's that built it.
"""

import re
from collections.abc import Mapping
from typing import Any

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in [^\n]*(?:\n +([^\n]+))?')
# Files of torch itself: a frame there is how torch ran the op, not the model's code.
_TORCH_FILES = re.compile(r"[/\\]torch[/\\]")

# What to do about an op trajx has no rule for, said by every refusal of one.
ADVICE = ("rewrite that code with operators trajx has a rule for (docs/models.md, operator table), "
          "or give an explicit permutation_spec naming every parameter around it (their axes then stay fixed)")


def module_path(stack: Mapping[str, Any] | str | None) -> str | None:
    """The innermost module as `"<path> (<class>)"` (`"<root>"` for the model itself), or None."""
    if not stack:
        return None
    if isinstance(stack, str):  # serialized: "key,path,module.Class;key,path,module.Class"
        entries = [entry.split(",") for entry in stack.split(";") if entry.count(",") >= 2]
        if not entries:
            return None
        path, kind = entries[-1][1], entries[-1][-1]
    else:
        path, kind = list(stack.values())[-1]
    name = getattr(kind, "__qualname__", None) or str(kind).rsplit(".", 1)[-1].strip("'>")
    return f"{path or '<root>'} ({name})"


def _frame(stack_trace: str | None) -> tuple[str, str, str] | None:
    """(file name, line, code) of the innermost frame outside torch (else the innermost)."""
    frames = _FRAME.findall(stack_trace or "")
    if not frames:
        return None
    path, line, code = next((f for f in reversed(frames) if not _TORCH_FILES.search(f[0])), frames[-1])
    return re.split(r"[/\\]", path)[-1], line, code.strip()


def source_line(stack_trace: str | None) -> str | None:
    """The innermost frame outside torch as `"file.py:12: code"` (file name only), or None."""
    frame = _frame(stack_trace)
    if frame is None:
        return None
    name, line, code = frame
    return f"{name}:{line}" + (f": {code}" if code else "")


def short_trace(stack_trace: str | None) -> str | None:
    """`stack_trace` cut to the frame `source_line` reads, with the file's name only (a
    program leaves the user's machine without the paths of its files)."""
    frame = _frame(stack_trace)
    if frame is None:
        return None
    name, line, code = frame
    return f'File "{name}", line {line}, in <model>' + (f"\n    {code}" if code else "")
