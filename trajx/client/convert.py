"""Local conversion of a user's own PyTorch `.pt`/`.pth` checkpoint to safetensors.

This is the only place trajx ever unpickles, and only on the user's machine for
the user's own file: `torch.load(weights_only=True)` refuses any pickle that
would construct objects beyond tensors and containers (nothing is executed). The
state dict is the file itself when it is a flat dict of name -> tensor, or the dict
under `--key` (or the first of `state_dict`, `model`, `model_state_dict` that is
one) in a training checkpoint such as `{"model": ..., "epoch": 3}`. torch is
imported here, late, and its absence is a usage error (exit 2) that names the
`convert` extra.
"""

from pathlib import Path
from typing import Any

from trajx.client.errors import InvalidLocalInput
from trajx.client.keymap import AS_IS, TRAINER_PREFIXES, WRAPPER_PREFIXES, KeyMapping, plan_renames

TORCH_SUFFIXES = frozenset({".pt", ".pth"})
NESTED_KEYS = ("state_dict", "model", "model_state_dict")


def needs_conversion(path: Path) -> bool:
    return path.suffix.lower() in TORCH_SUFFIXES


def convert_state_dict(path: Path, out_dir: Path,
                       mapping: KeyMapping = AS_IS) -> tuple[Path, list[str]]:
    """Write `out_dir/<stem>.safetensors` from the checkpoint in `path`; return it and the
    notes of the mapping applied (which nested key, which prefixes were stripped).

    Raises InvalidLocalInput naming the file when it is not a loadable weights-only
    pickle, holds no dict of tensors keyed by strings, or `mapping` does not fit it.
    """
    try:
        import torch
        from safetensors.torch import save_file
    except ImportError as exc:  # a client-only install: converting is the one thing that needs torch
        raise InvalidLocalInput(
            f"{path}: converting a PyTorch file needs torch and safetensors on this machine "
            f"(pip install 'trajx[convert]'), or upload a .safetensors file instead ({exc})"
        ) from exc
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise InvalidLocalInput(
            f"{path}: not a weights-only PyTorch state dict (refused without executing it): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    state, notes = _find_state_dict(path, loaded, mapping.key, lambda v: isinstance(v, torch.Tensor))
    renames, rename_notes = plan_renames(state, mapping, WRAPPER_PREFIXES + TRAINER_PREFIXES)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"{path.stem}.safetensors"
    # safetensors refuses shared or strided storage: give every tensor its own contiguous copy.
    save_file({renames.get(k, k): v.detach().contiguous().clone() for k, v in state.items()}, str(dest))
    return dest, notes + rename_notes


def _find_state_dict(path: Path, loaded: Any, key: str | None,
                     is_tensor: Any) -> tuple[dict[str, Any], list[str]]:
    """The flat name -> tensor dict inside `loaded`, and a note saying where it was found."""
    def is_state_dict(value: Any) -> bool:
        return (isinstance(value, dict) and bool(value)
                and all(isinstance(k, str) and is_tensor(v) for k, v in value.items()))

    if key is not None:
        value = loaded
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                keys = sorted(map(str, value))[:10] if isinstance(value, dict) else []
                raise InvalidLocalInput(f"{path}: --key {key!r}: no {part!r} here (keys: {keys or 'none'})")
            value = value[part]
        if not is_state_dict(value):
            raise InvalidLocalInput(f"{path}: --key {key!r} is not a dict of name -> tensor")
        return value, [f"took the state dict under {key!r}"]
    if is_state_dict(loaded):
        return loaded, []
    if not isinstance(loaded, dict) or not loaded:
        raise InvalidLocalInput(f"{path}: expected a non-empty dict of tensors, got {type(loaded).__name__}")
    for candidate in NESTED_KEYS:
        if is_state_dict(loaded.get(candidate)):
            return loaded[candidate], [f"took the state dict under {candidate!r}"]
    bad = [repr(k) for k, v in loaded.items() if not isinstance(k, str) or not is_tensor(v)]
    raise InvalidLocalInput(
        f"{path}: only a dict of name -> tensor can be converted; not tensors: {', '.join(bad[:5])} "
        f"(for a training checkpoint, name the state dict's key with --key)"
    )
