"""Peak memory of this process: GPU allocations on CUDA, resident set size on CPU."""

from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak measurement (best effort: the RSS peak resets on Linux only)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _CLEAR_REFS.write_text("5")  # "5" resets the kernel's peak RSS (VmHWM)
    except OSError:
        pass


def current_memory_bytes(device: torch.device) -> int | None:
    """Bytes in use now: allocated GPU memory, or the resident set size."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _status_kib("VmRSS")


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak bytes since the last reset: GPU allocations, or peak RSS; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _status_kib("VmHWM")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
