"""Errors shared by the engine, the local runner, the worker and the API.

Each carries a stable machine-readable `code` that ends up in a job's `error.code`
and in problem+json bodies; `details` names the offending tensor/field/artifact.
"""

from typing import Any


class TrajxError(Exception):
    """Base error: a stable `code`, a human message and structured details."""

    code = "trajx_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class InvalidInput(TrajxError):
    """The user's checkpoints, data or spec cannot be used (never worth a retry)."""

    code = "invalid_input"


class UnsupportedModel(TrajxError):
    """Permutation-spec derivation met an op it does not understand."""

    code = "unsupported_op"


class NonFiniteLoss(TrajxError):
    """A loss or gradient became NaN/inf during the transfer."""

    code = "non_finite_loss"


class Cancelled(TrajxError):
    """The caller's cancel check asked the run to stop between steps."""

    code = "cancelled"


# How an allocation failure reads: torch.OutOfMemoryError (CUDA), the CPU allocator's
# RuntimeError, or Python's MemoryError.
_OUT_OF_MEMORY_MARKERS = ("out of memory", "DefaultCPUAllocator", "can't allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a failed allocation (an `out_of_memory` error, not an internal one)."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OUT_OF_MEMORY_MARKERS)
