"""The transfer methods, by name: the one list the job spec, the executor, the CLI help
and the tests read.

Each entry says what the method does and which per-target inputs it needs beyond the
initialization (Oracle: the target trained for real). The strategies that compute them
are the engine's (`trajx.engine.transfer.methods.STRATEGIES`, keyed by these names; a
test holds the two together). Torch-free: the API validates specs with it.
"""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    needs: tuple[str, ...] = ()  # target fields the method reads, e.g. "trained"


TRANSFER_METHODS: dict[str, MethodInfo] = {info.name: info for info in (
    MethodInfo("fgmt", "fast gradient matching along the trajectory: each step adds one gradient pair "
                       "and re-solves warm-started (2·G·T backward passes)"),
    MethodInfo("gmt", "gradient matching along the trajectory: each step recomputes every earlier "
                      "target gradient under the newest permutation (G·T(T+1) backward passes)"),
    MethodInfo("naive", "baseline: the identity permutation"),
    MethodInfo("oracle", "evaluation baseline: matches the trained target's actual displacement "
                         "to the source's", needs=("trained",)),
)}

DEFAULT_METHOD = "fgmt"

# The spec's `method` field: a Literal built from the registry, so a new method is one entry.
TransferMethodName = Literal[tuple(TRANSFER_METHODS)]  # type: ignore[valid-type]


def describe_methods() -> str:
    """Every method with its summary, for the spec's schema (and so the API docs)."""
    return "; ".join(f"{info.name}: {info.summary}" for info in TRANSFER_METHODS.values())


def methods_help() -> str:
    """The methods in one line for CLI help, e.g. 'fgmt (default), gmt, naive, oracle (needs
    targets[].trained)'."""
    def label(info: MethodInfo) -> str:
        notes = ["default"] if info.name == DEFAULT_METHOD else []
        notes += [f"needs targets[].{need}" for need in info.needs]
        return info.name + (f" ({', '.join(notes)})" if notes else "")
    return "Transfer methods: " + ", ".join(label(info) for info in TRANSFER_METHODS.values()) + "."
