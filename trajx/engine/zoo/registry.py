"""The architecture registry: name -> how to build, configure and feed a model.

Built-in architectures register themselves in `trajx.engine.zoo`; an operator's
package adds its own through the `trajx.architectures` entry point group, whose
entries load to an `ArchitectureEntry`:

    [project.entry-points."trajx.architectures"]
    mynet = "mypkg.models:MYNET_ENTRY"
"""

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from trajx.arch_configs import PLUGIN_GROUP, validate_config
from trajx.engine.losses import CLASSES_OR_VALUES, Task
from trajx.engine.zoo.plugins import pick_up_new_installs
from trajx.errors import InvalidInput

ENTRY_POINT_GROUP = PLUGIN_GROUP


@dataclass(frozen=True)
class ArchitectureEntry:
    """One architecture: a builder, its config model, an example-input maker, its task.

    `builder(config)` gets a validated `config_model` instance and returns the module;
    `example_input(config, batch)` returns a tensor of the shape the module takes
    (used for tracing and the spec self-check); `task(config)` says what the module
    is trained to do (loss, accuracy, the data it takes; trajx.engine.losses);
    `checkpoint_names(model)`, when given, maps the module's state-dict names to the names
    its checkpoints use on disk (Hugging Face saves some models under older names).
    """

    builder: Callable[[Any], nn.Module]
    config_model: type[BaseModel]
    example_input: Callable[[Any, int], torch.Tensor]
    description: str = ""
    task: Callable[[Any], Task] = lambda config: CLASSES_OR_VALUES
    checkpoint_names: Callable[[nn.Module], dict[str, str]] | None = None


REGISTRY: dict[str, ArchitectureEntry] = {}


def register(name: str, entry: ArchitectureEntry) -> None:
    """Add `entry` under `name`; a second registration of one name is a ValueError."""
    if name in REGISTRY and REGISTRY[name] is not entry:
        raise ValueError(f"architecture {name!r} is already registered")
    REGISTRY[name] = entry


def load_entry_points(points: list[EntryPoint] | None = None) -> list[str]:
    """Register the architectures of the `trajx.architectures` entry point group.

    `points` defaults to the installed ones. Returns the names added. An entry that
    fails to import or does not load to an ArchitectureEntry raises
    InvalidInput(code="invalid_architecture_plugin") naming it.
    """
    if points is None:
        pick_up_new_installs()  # a package installed since start-up is found without a restart
        points = list(entry_points(group=ENTRY_POINT_GROUP))
    added = []
    for point in points:
        try:
            entry = point.load()
        except Exception as exc:  # an operator's package: any import error is theirs to see
            raise InvalidInput(
                f"entry point {point.name!r} ({point.value}) failed to load: {type(exc).__name__}: {exc}",
                code="invalid_architecture_plugin",
                entry_point=point.name,
            ) from exc
        if not isinstance(entry, ArchitectureEntry):
            raise InvalidInput(
                f"entry point {point.name!r} ({point.value}) is a {type(entry).__name__}, "
                "not an ArchitectureEntry",
                code="invalid_architecture_plugin",
                entry_point=point.name,
            )
        if point.name not in REGISTRY:
            register(point.name, entry)
            added.append(point.name)
    return added


def get_entry(name: str) -> ArchitectureEntry:
    """The registered entry for `name`; InvalidInput(code="unknown_architecture") if none."""
    if name not in REGISTRY:
        load_entry_points()
    if name not in REGISTRY:
        raise InvalidInput(
            f"unknown architecture {name!r}; known: {sorted(REGISTRY)}",
            code="unknown_architecture",
            field="arch.name",
        )
    return REGISTRY[name]


def parse_config(name: str, config: dict[str, Any] | BaseModel) -> BaseModel:
    """Validate `config` for architecture `name`; InvalidInput(code="invalid_config") names each bad key."""
    return validate_config(name, get_entry(name).config_model, config)


def build_model(name: str, config: dict[str, Any] | BaseModel) -> nn.Module:
    """Build architecture `name` from its config (fresh default initialization).

    Raises InvalidInput with code "unknown_architecture" or "invalid_config".
    """
    return get_entry(name).builder(parse_config(name, config))


def init_state_dict(name: str, config: dict[str, Any] | BaseModel, seed: int) -> dict[str, torch.Tensor]:
    """The default initialization of `name` drawn from `seed`: bit-identical per seed.

    The global RNG is forked, so callers' random state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(name, config)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def example_input(name: str, config: dict[str, Any] | BaseModel, batch: int = 2,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """A random input batch of the shape architecture `name` takes (for tracing, self-checks)."""
    entry = get_entry(name)
    parsed = parse_config(name, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if generator is None else int(torch.randint(2**31, (1,), generator=generator)))
        return entry.example_input(parsed, batch)


def task_for(name: str, config: dict[str, Any] | BaseModel) -> Task:
    """What architecture `name` with `config` is trained to do (its loss and accuracy)."""
    return get_entry(name).task(parse_config(name, config))


def checkpoint_names(name: str, model: nn.Module) -> dict[str, str]:
    """State-dict name of `model` (architecture `name`) -> its name in checkpoint files."""
    entry = get_entry(name)
    if entry.checkpoint_names is None:
        return {key: key for key in model.state_dict()}
    return entry.checkpoint_names(model)


def list_architectures() -> list[str]:
    """Names of every registered architecture, plug-ins included, sorted."""
    load_entry_points()
    return sorted(REGISTRY)
