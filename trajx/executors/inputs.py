"""A job's model and input files, read one way by every executor.

`open_inputs(arch, resolve)` builds the architecture's model once and answers what each
kind asks of its files: a checkpoint (stored under the names the architecture saves it
with, e.g. a Hugging Face `save_pretrained` folder; returned under the module's own
names), a checkpoint checked by its header alone, a data shard checked against the model
and the architecture's task. Results go back out under the checkpoint names, so a
job's outputs load wherever its inputs came from.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trajx.engine.batches import Dataset
from trajx.engine.losses import Task
from trajx.executors.architecture import ModelSource, StateDict, open_architecture
from trajx.executors.registry import Resolve
from trajx.io import (
    check_checkpoint_header,
    load_checkpoint,
    load_data,
    save_tensors,
    validate_data,
)
from trajx.job_spec import Architecture


@dataclass
class JobInputs:
    """The job's model (`model`, a working instance holding whatever was loaded last),
    an example input batch for tracing, and its files through `resolve`."""

    architecture: ModelSource
    model: nn.Module
    example: torch.Tensor
    resolve: Resolve
    names: dict[str, str]  # state-dict name -> name in checkpoint files
    _expected: dict[str, torch.Tensor] = field(repr=False)  # checkpoint name -> model tensor
    _module_names: dict[str, str] = field(repr=False)  # checkpoint name -> state-dict name

    @property
    def task(self) -> Task:
        return self.architecture.task

    def checkpoint(self, ref: str, what: str) -> StateDict:
        """Checkpoint `ref`, validated against the model (InvalidInput naming `what`),
        under the model's state-dict names."""
        state = load_checkpoint(self.resolve(ref), self._expected, what)
        return {self._module_names[name]: tensor for name, tensor in state.items()}

    def check_header(self, ref: str, what: str) -> None:
        """`checkpoint`'s checks on the file header alone: a long list is vetted in O(1) memory."""
        check_checkpoint_header(self.resolve(ref), self._expected, what)

    def data(self, ref: str, what: str) -> Dataset:
        """Data shard `ref`, checked against the model and the architecture's task."""
        data = load_data(self.resolve(ref), what)
        validate_data(data, self.model, what, self.example.shape[1:], self.task)
        return data

    def init(self, seed: int, where: str) -> StateDict:
        """A seeded initialization of the architecture (`where` names the spec field in errors)."""
        return self.architecture.init(seed, where)

    def saved(self, state: Mapping[str, torch.Tensor]) -> StateDict:
        """`state` (state-dict names) under the checkpoint names."""
        return {self.names[name]: tensor for name, tensor in state.items()}

    def save(self, path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
        """Write a result checkpoint under the checkpoint names."""
        save_tensors(path, self.saved(state), metadata)


def open_inputs(arch: Architecture, resolve: Resolve) -> JobInputs:
    """Build `arch`'s model once and the name mapping of its checkpoint files."""
    architecture = open_architecture(arch, resolve)
    model = architecture.build()
    names = architecture.checkpoint_names(model)
    expected = {names[name]: tensor for name, tensor in model.state_dict().items()}
    return JobInputs(architecture, model, architecture.example(2), resolve, names, expected,
                     {saved: name for name, saved in names.items()})
