"""Local conversion of a user's own PyTorch `.pt`/`.pth` state dict to safetensors.

This is the only place trajx ever unpickles, and only on the user's machine for
the user's own file: `torch.load(weights_only=True)` refuses any pickle that
would construct objects beyond tensors and containers (nothing is executed), and
the result must be a flat dict of name -> tensor. torch is imported here, late,
and its absence is a usage error (exit 2) that names the `convert` extra.
"""

from pathlib import Path

from trajx.client.errors import InvalidLocalInput

TORCH_SUFFIXES = frozenset({".pt", ".pth"})


def needs_conversion(path: Path) -> bool:
    return path.suffix.lower() in TORCH_SUFFIXES


def convert_state_dict(path: Path, out_dir: Path) -> Path:
    """Write `out_dir/<stem>.safetensors` from the state dict in `path` and return it.

    Raises InvalidLocalInput naming the file when it is not a loadable weights-only
    pickle or not a plain dict of tensors keyed by strings.
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
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise InvalidLocalInput(
            f"{path}: not a weights-only PyTorch state dict (refused without executing it): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if not isinstance(state, dict) or not state:
        raise InvalidLocalInput(f"{path}: expected a non-empty dict of tensors, got {type(state).__name__}")
    bad = [repr(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InvalidLocalInput(
            f"{path}: only a plain dict of name -> tensor can be converted; not tensors: {', '.join(bad[:5])}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"{path.stem}.safetensors"
    # safetensors refuses shared or strided storage: give every tensor its own contiguous copy.
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(dest))
    return dest
