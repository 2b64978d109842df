"""Export a module to a model program, and rebuild a trainable module from one.

Exporting runs the user's code, on the user's machine (`trajx export`). Rebuilding
runs none: the document is checked against the operator allow-list first
(`trajx.program.document.check_program`), then torch's own graph deserializer reads
the JSON graphs; the tensors it asks for are zeros made here from the graph's
shapes, so the only pickles torch reads are ones trajx just wrote itself. The
weights come from a safetensors checkpoint afterwards.
"""

import base64
import json
from typing import Any

import torch
from torch import nn
from torch._export.serde import serialize as serde
from torch.export import ExportedProgram

from trajx.errors import InvalidInput
from trajx.node_source import short_trace
from trajx.program.document import FORMAT, MAX_DIM, MODES, VERSION, check_program
from trajx.program.module import ProgramModule

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
           "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def export_program(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                   task: str = "classes-or-values") -> dict[str, Any]:
    """The program document of `model` on `example_inputs` (train and eval graphs).

    Raises InvalidInput when the model uses an operator trajx refuses (the same check
    the service makes), so the user learns it before uploading.
    """
    was_training = model.training
    graphs, constants = {}, {}
    batch = torch.export.Dim("batch", min=1, max=MAX_DIM)  # any batch size; all else as exported
    dynamic = tuple({0: batch} for _ in example_inputs)
    try:
        for mode in MODES:
            model.train(mode == "train")
            program = torch.export.export(model, example_inputs, dynamic_shapes=dynamic, strict=False)
            graphs[mode] = _without_source_locations(json.loads(serde.serialize(program).exported_program))
            constants.update(_constants(program))
    finally:
        model.train(was_training)
    doc = {"format": FORMAT, "version": VERSION, "torch": torch.__version__, "task": task,
           "inputs": [{"shape": list(x.shape), "dtype": _dtype_name(x.dtype)} for x in example_inputs],
           "constants": constants, "graphs": graphs}
    tied = tied_names(model)
    if tied:
        doc["tied"] = tied
    check_program(doc)
    return doc


def load_program(doc: Any) -> ProgramModule:
    """A trainable module from a program document (weights zero until a checkpoint is loaded)."""
    check_program(doc)
    programs = {mode: _deserialize(doc["graphs"][mode]) for mode in MODES}
    constants = {name: _tensor(spec) for name, spec in doc["constants"].items()}
    return ProgramModule(programs, constants, doc.get("tied", []))


def tied_names(model: nn.Module) -> list[list[str]]:
    """The state-dict names that hold one tensor (an embedding shared with the output
    head), in groups of two or more, each in state-dict order. torch.export keeps only
    one of them in the graph; the program records the groups so the rebuilt module holds
    one tensor under all of them again."""
    groups: dict[int, list[str]] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False),
                         *model.named_buffers(remove_duplicate=False)]:
        groups.setdefault(id(tensor), []).append(name)
    order = {name: i for i, name in enumerate(model.state_dict(keep_vars=True))}
    return [sorted(names, key=lambda n: order.get(n, len(order))) for names in groups.values() if len(names) > 1]


def example_inputs(doc: dict[str, Any], batch: int, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like the program's example, with `batch` samples (ids: zeros)."""
    out = []
    for spec in doc["inputs"]:
        shape, dtype = [batch, *spec["shape"][1:]], _DTYPES[spec["dtype"]]
        out.append(torch.randn(shape, generator=generator).to(dtype) if dtype.is_floating_point
                   else torch.zeros(shape, dtype=dtype))
    return tuple(out)


def _deserialize(graph: dict[str, Any]) -> ExportedProgram:
    state, constants = _placeholder_tensors(graph)
    artifact = serde.SerializedArtifact(
        json.dumps(graph).encode(), serde.serialize_torch_artifact(state),
        serde.serialize_torch_artifact(constants), serde.serialize_torch_artifact(((), {})))
    try:
        return serde.deserialize(artifact)
    except Exception as exc:  # noqa: BLE001  (torch's deserializer: any failure is a malformed graph)
        raise InvalidInput(f"the program's graph cannot be read: {type(exc).__name__}: {exc}"[:2000],
                           code="invalid_program") from None


def _placeholder_tensors(graph: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Zero tensors for every parameter, persistent buffer and constant the graph takes."""
    values = graph["graph_module"]["graph"]["tensor_values"]
    state: dict[str, Any] = {}
    constants: dict[str, torch.Tensor] = {}
    for spec in graph["graph_module"]["signature"]["input_specs"]:
        (kind, body), = spec.items()
        if kind == "user_input":
            continue
        zeros = _zeros(values[body["arg"]["name"]])
        if kind == "parameter":
            state[body["parameter_name"]] = nn.Parameter(zeros, requires_grad=zeros.is_floating_point())
        elif kind == "buffer" and body.get("persistent", True):
            state[body["buffer_name"]] = zeros
        else:
            constants[body.get("buffer_name") or body.get("tensor_constant_name")] = zeros
    return state, constants


def _zeros(meta: dict[str, Any]) -> torch.Tensor:
    # Parameters and buffers have static sizes; only user inputs carry the batch symbol.
    sizes = [size["as_int"] for size in meta["sizes"]]
    return torch.zeros(sizes, dtype=serde._SERIALIZE_TO_TORCH_DTYPE[meta["dtype"]])


def _constants(program: ExportedProgram) -> dict[str, dict[str, Any]]:
    out = {}
    for name, value in program.constants.items():
        if not isinstance(value, torch.Tensor):
            raise InvalidInput(f"constant {name!r} is a {type(value).__name__}; a program holds tensors only",
                               code="invalid_program")
        tensor = value.detach().contiguous().cpu()
        out[name] = {"dtype": _dtype_name(tensor.dtype), "shape": list(tensor.shape),
                     "data": base64.b64encode(tensor.view(torch.uint8).numpy().tobytes()
                                              if tensor.numel() else b"").decode()}
    return out


def _tensor(spec: dict[str, Any]) -> torch.Tensor:
    raw = bytearray(base64.b64decode(spec["data"]))
    flat = torch.frombuffer(raw, dtype=_DTYPES[spec["dtype"]]) if raw else torch.empty(0, dtype=_DTYPES[spec["dtype"]])
    return flat.reshape(spec["shape"]).clone()


def _dtype_name(dtype: torch.dtype) -> str:
    if dtype not in _NAMES:
        raise InvalidInput(f"dtype {dtype} cannot travel in a program", code="invalid_program")
    return _NAMES[dtype]


def _without_source_locations(graph: dict[str, Any]) -> dict[str, Any]:
    # Stack traces name files on the user's machine: only the frame a refusal quotes
    # travels, with its file's name and no path.
    for node in graph["graph_module"]["graph"]["nodes"]:
        metadata = node.get("metadata", {})
        short = short_trace(metadata.pop("stack_trace", None))
        if short:
            metadata["stack_trace"] = short
    return graph
