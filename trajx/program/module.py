"""A trainable module rebuilt from a model program's graphs, without unpickling anything.

A program holds two `torch.export` graphs of one model (train and eval mode: an
exported graph bakes in BatchNorm's and dropout's mode) in their lifted form, where
parameters and buffers are graph inputs. `ProgramModule` registers those parameters
and buffers under the model's own state-dict names and, on each call, feeds the graph
of its current mode with whatever tensors its attributes hold then, so
`load_state_dict`, in-place updates and `torch.func.functional_call` all work as on
the user's own module. Tied names (the document's `tied` groups: an embedding shared
with the output head, which torch.export reads under one name) hold one tensor again. Buffer mutations the graph returns (BatchNorm's running
statistics in train mode) are written back.
"""

from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils._pytree import tree_unflatten

from trajx.errors import InvalidInput

_STATE_KINDS = (InputKind.PARAMETER, InputKind.BUFFER)


class ProgramModule(nn.Module):
    def __init__(self, graphs: dict[str, ExportedProgram], constants: dict[str, torch.Tensor],
                 tied: list[list[str]] = ()):
        super().__init__()
        train, evaluation = graphs["train"], graphs["eval"]
        state = _state_specs(train)
        if state != _state_specs(evaluation):
            raise InvalidInput("the program's train and eval graphs use different parameters or buffers",
                               code="invalid_program")
        for target, (kind, persistent) in state.items():
            owner, leaf = self._owner(target)
            if kind == InputKind.PARAMETER:
                owner.register_parameter(leaf, nn.Parameter(train.state_dict[target].detach().clone()))
            elif persistent:
                owner.register_buffer(leaf, train.state_dict[target].detach().clone())
            else:  # a non-persistent buffer travels with the program's constants
                owner.register_buffer(leaf, constants[target].clone(), persistent=False)
        for first, *others in tied:  # one tensor under every name, as in the user's module
            shared = self._tensor(first)
            for name in others:
                owner, leaf = self._owner(name)
                if isinstance(shared, nn.Parameter):
                    owner.register_parameter(leaf, shared)
                else:
                    owner.register_buffer(leaf, shared)
        # Plain attributes, not submodules: their own copies of the weights are never used.
        self._programs = {"train": train, "eval": evaluation}
        self._constants = constants

    def forward(self, *inputs: torch.Tensor) -> Any:
        program = self._programs["train" if self.training else "eval"]
        user_inputs = iter(inputs)
        args = []
        for spec in program.graph_signature.input_specs:
            if spec.kind in _STATE_KINDS:
                args.append(self._tensor(spec.target))
            elif spec.kind == InputKind.CONSTANT_TENSOR:
                args.append(self._constants[spec.target])
            else:
                args.append(next(user_inputs))
        outputs = program.graph_module(*args)
        user_outputs = []
        for spec, value in zip(program.graph_signature.output_specs, outputs, strict=True):
            if spec.kind == OutputKind.BUFFER_MUTATION:
                with torch.no_grad():
                    self._tensor(spec.target).copy_(value)
            else:
                user_outputs.append(value)
        return tree_unflatten(user_outputs, program.call_spec.out_spec)

    def _tensor(self, target: str) -> torch.Tensor:
        # By attribute, not get_parameter: functional_call swaps in plain tensors.
        owner: Any = self
        for part in target.split("."):
            owner = getattr(owner, part)
        return owner

    def _owner(self, target: str) -> tuple[nn.Module, str]:
        """The submodule that holds `target` (created empty on the way) and the leaf name."""
        *path, leaf = target.split(".")
        owner: nn.Module = self
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
        return owner, leaf


def _state_specs(program: ExportedProgram) -> dict[str, tuple[InputKind, bool]]:
    return {spec.target: (spec.kind, spec.persistent is not False)
            for spec in program.graph_signature.input_specs if spec.kind in _STATE_KINDS}
