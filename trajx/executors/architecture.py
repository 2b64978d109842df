"""The model a job names, whichever way it names it: an architecture by name, or a program.

Executors build models, example inputs and seeded initializations through a
`ModelSource`, so a kind never asks how the architecture reached the service. A program
(`arch.program`, docs/bring-your-own-model.md) is read as JSON, checked against the
operator allow-list, and rebuilt without running any of the user's code.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trajx.engine.losses import CLASSES_OR_VALUES, TASKS_BY_NAME, Task
from trajx.engine.zoo import (
    build_model,
    checkpoint_names,
    example_input,
    init_state_dict,
    parse_config,
    task_for,
)
from trajx.errors import InvalidInput
from trajx.executors.registry import Resolve
from trajx.job_spec import ARCH_PROGRAM, Architecture
from trajx.program.build import example_inputs, load_program
from trajx.program.document import check_program

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSource:
    """How to make the job's model: `build()` a fresh module, `example(batch)` an input
    batch for tracing, `init(seed, where)` a seeded initialization (`where` names the
    spec field in errors), `task` its loss and accuracy, `checkpoint_names(model)` the
    module's state-dict names -> the names its checkpoint files use."""

    build: Callable[[], nn.Module]
    example: Callable[[int], torch.Tensor]
    init: Callable[[int, str], StateDict]
    task: Task = CLASSES_OR_VALUES
    checkpoint_names: Callable[[nn.Module], dict[str, str]] = lambda model: {k: k for k in model.state_dict()}


def open_architecture(arch: Architecture, resolve: Resolve) -> ModelSource:
    """The ModelSource of `arch`; InvalidInput when its program is not one trajx runs."""
    if arch.program is None:
        # Validated once here: every build, example and initialization reuses the parsed config.
        name, config = arch.name, parse_config(arch.name, arch.config)
        return ModelSource(build=lambda: build_model(name, config),
                           example=lambda batch: example_input(name, config, batch=batch),
                           init=lambda seed, where: init_state_dict(name, config, seed),
                           task=task_for(name, config),
                           checkpoint_names=lambda model: checkpoint_names(name, model))
    document = _read_program(resolve(arch.program))
    check_program(document)
    return ModelSource(build=lambda: load_program(document),
                       example=lambda batch: example_inputs(document, batch)[0],
                       init=_no_initializer, task=TASKS_BY_NAME[document["task"]])


def _read_program(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{ARCH_PROGRAM}: not a readable model program: {exc}",
                           code="invalid_program", field=ARCH_PROGRAM) from None


def _no_initializer(seed: int, where: str) -> StateDict:
    raise InvalidInput(f"{where}: a model program has no initializer on the service; give the target "
                       "as a checkpoint (trajx export --seed N writes one)", code="invalid_value", field=where)
