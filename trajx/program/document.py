"""What a model program must look like, checked without torch (the API checks uploads with it).

The operator allow-list is the spec tracer's rule table (`trajx.op_table`): a program
can only call ATen operators that spec derivation has a rule for, so nothing in it
names Python code, and everything it computes has a known permutation behaviour.
Anything else (an unknown or custom operator, a Python callable, a custom class, a
nested graph, an unknown signature kind) is refused, naming it, before any of the
program is deserialized.
"""

import base64
import binascii
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trajx.errors import InvalidInput
from trajx.node_source import ADVICE, module_path, source_line
from trajx.op_table import RULES, refusal

FORMAT = "trajx.program"
VERSION = 1
MODES = ("train", "eval")
TASKS = ("classes-or-values", "causal-lm", "masked-lm")  # trajx.engine.losses.TASKS_BY_NAME
DTYPE_SIZES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4,
               "int16": 2, "int8": 1, "uint8": 1, "bool": 1}
MAX_INPUTS = 1  # the engine feeds a model one `inputs` tensor
MAX_DIM = 1 << 20
MAX_CONSTANT_BYTES = 64 << 20
_ATEN = "torch.ops."
# Serialized-graph members that would bring in code or objects beyond ATen tensors.
_FORBIDDEN_ARGS = {"as_custom_obj": "a custom class object", "as_graph": "a nested graph",
                   "as_operator": "an operator passed as a value"}
# Shape arithmetic of a graph exported with a dynamic batch size: integer functions on
# sizes only. Tracing re-exports the rebuilt module with static shapes, where they fold.
SHAPE_OPS = frozenset({
    "torch.ops.aten.sym_size.int", "_operator.add", "_operator.sub", "_operator.mul",
    "_operator.floordiv", "_operator.mod", "_operator.neg", "_operator.eq", "_operator.ne",
    "_operator.le", "_operator.ge", "_operator.lt", "_operator.gt", "torch.sym_max", "torch.sym_min",
})
_INPUT_KINDS = {"user_input", "parameter", "buffer", "tensor_constant"}
_OUTPUT_KINDS = {"user_output", "buffer_mutation"}


@dataclass(frozen=True)
class ProgramSummary:
    """What a checked program holds: its operators and state names, for listings and errors."""

    task: str
    operators: list[str]
    parameters: list[str]
    buffers: list[str]
    inputs: list[dict[str, Any]]


def is_program_document(doc: Any) -> bool:
    """Whether `doc` says it is a model program (it may still be refused by check_program)."""
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def check_program(doc: Any) -> ProgramSummary:
    """Raise InvalidInput (`invalid_program`, or `unsupported_op` naming the op and node)
    unless `doc` is a program this version of trajx can run safely."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        _invalid(f"not a model program: expected a JSON object with \"format\": \"{FORMAT}\"", "format")
    if doc.get("version") != VERSION:
        _invalid(f"program version {doc.get('version')!r} is not supported (this trajx reads {VERSION})",
                 "version")
    task = doc.get("task")
    if task not in TASKS:
        _invalid(f"task {task!r} is not one of {list(TASKS)}", "task")
    inputs = _check_inputs(doc.get("inputs"))
    _check_constants(doc.get("constants", {}))
    graphs = doc.get("graphs")
    if not isinstance(graphs, dict) or sorted(graphs) != sorted(MODES):
        _invalid(f"'graphs' must hold exactly {list(MODES)}", "graphs")
    operators: dict[str, None] = {}
    state: dict[str, tuple[list[str], list[str]]] = {}
    for mode in MODES:
        graph, signature = _graph_parts(graphs[mode], mode)
        for op in _check_nodes(graph, mode):
            operators[op] = None
        state[mode] = _check_signature(signature, mode)
    if state["train"] != state["eval"]:
        _invalid("the train and eval graphs use different parameters or buffers", "graphs")
    parameters, buffers = state["train"]
    _check_tied(doc.get("tied", []), {*parameters, *buffers})
    return ProgramSummary(task, list(operators), parameters, buffers, inputs)


MAX_TIED_GROUPS = 1024


def _check_tied(tied: Any, names: set[str]) -> None:
    """`tied`: groups of two or more state names holding one tensor, each name in one group."""
    if not isinstance(tied, list) or len(tied) > MAX_TIED_GROUPS:
        _invalid(f"'tied' must be a list of at most {MAX_TIED_GROUPS} groups of state names", "tied")
    seen: set[str] = set()
    for i, group in enumerate(tied):
        if not isinstance(group, list) or not 2 <= len(group) <= 64 or not all(isinstance(n, str) for n in group):
            _invalid(f"tied[{i}] must list 2 to 64 state names", f"tied[{i}]")
        unknown = [n for n in group if n not in names]
        if unknown:
            _invalid(f"tied[{i}] names {unknown[:3]}, which the program's graphs do not take", f"tied[{i}]")
        if seen & set(group) or len(set(group)) != len(group):
            _invalid(f"tied[{i}] repeats a name of another group", f"tied[{i}]")
        seen |= set(group)


def _invalid(message: str, field: str) -> None:
    raise InvalidInput(message, code="invalid_program", field=field)


def _check_inputs(inputs: Any) -> list[dict[str, Any]]:
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        _invalid(f"'inputs' must list 1 to {MAX_INPUTS} example inputs", "inputs")
    for i, spec in enumerate(inputs):
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(type(d) is int and 1 <= d <= MAX_DIM for d in shape)):
            _invalid(f"inputs[{i}].shape must be a list of at most 8 sizes in 1..{MAX_DIM}", f"inputs[{i}].shape")
        if spec.get("dtype") not in DTYPE_SIZES:
            _invalid(f"inputs[{i}].dtype must be one of {sorted(DTYPE_SIZES)}", f"inputs[{i}].dtype")
    return inputs


def _check_constants(constants: Any) -> None:
    if not isinstance(constants, dict):
        _invalid("'constants' must be an object of name -> tensor", "constants")
    total = 0
    for name, spec in constants.items():
        field = f"constants.{name}"
        if not isinstance(spec, dict) or spec.get("dtype") not in DTYPE_SIZES:
            _invalid(f"{field}: needs a dtype among {sorted(DTYPE_SIZES)}", field)
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
            _invalid(f"{field}: shape must be a list of sizes in 0..{MAX_DIM}", field)
        expected = math.prod(shape) * DTYPE_SIZES[spec["dtype"]]
        total += expected
        if total > MAX_CONSTANT_BYTES:
            _invalid(f"constants exceed {MAX_CONSTANT_BYTES} bytes", field)
        try:
            size = len(base64.b64decode(spec.get("data", ""), validate=True))
        except (binascii.Error, TypeError, ValueError):
            _invalid(f"{field}: data must be base64", field)
        if size != expected:
            _invalid(f"{field}: {size} bytes of data for shape {shape} {spec['dtype']} ({expected} expected)",
                     field)


def _graph_parts(program: Any, mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    module = program.get("graph_module") if isinstance(program, dict) else None
    graph = module.get("graph") if isinstance(module, dict) else None
    signature = module.get("signature") if isinstance(module, dict) else None
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list) or not isinstance(signature, dict):
        _invalid(f"graphs.{mode}: not a serialized torch.export program", f"graphs.{mode}")
    if graph.get("custom_obj_values"):
        _invalid(f"graphs.{mode}: custom class objects are not allowed", f"graphs.{mode}")
    return graph, signature


def _check_nodes(graph: dict[str, Any], mode: str) -> Iterator[str]:
    for index, node in enumerate(graph["nodes"]):
        target = node.get("target") if isinstance(node, dict) else None
        name = _node_name(node, index)
        for member, what in _forbidden_members(node.get("inputs") if isinstance(node, dict) else None):
            raise InvalidInput(f"graphs.{mode}: node {name} passes {what} ({member}), which is not allowed",
                               code="invalid_program", node=name, field=f"graphs.{mode}")
        if target in SHAPE_OPS:
            continue
        if not isinstance(target, str) or not target.startswith(_ATEN + "aten."):
            raise InvalidInput(
                f"graphs.{mode}: node {name} calls {target!r}, which is not an ATen operator "
                "(custom operators and Python functions are not allowed in a program)",
                code="unsupported_op", op=str(target)[:200], node=name, field=f"graphs.{mode}")
        op = target[len(_ATEN):]
        if op not in RULES:
            metadata = node.get("metadata") if isinstance(node.get("metadata"), dict) else {}
            module, source = module_path(metadata.get("nn_module_stack")), source_line(metadata.get("stack_trace"))
            where = "".join([f" in module {module}" if module else "", f" at {source}" if source else ""])
            raise InvalidInput(f"graphs.{mode}: node {name}{where} calls {op}, which trajx refuses: "
                               f"{refusal(op)}; {ADVICE}",
                               code="unsupported_op", op=op, node=name, field=f"graphs.{mode}",
                               **({"module": module} if module else {}), **({"source": source} if source else {}))
        yield op


def _forbidden_members(value: Any) -> Iterator[tuple[str, str]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if key in _FORBIDDEN_ARGS:
                    yield key, _FORBIDDEN_ARGS[key]
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)


def _node_name(node: Any, index: int) -> str:
    """The node's own name (an op with several results names them after the getitems
    that read them, so its first output is not its name)."""
    if isinstance(node, dict) and isinstance(node.get("name"), str) and node["name"]:
        return node["name"][:100]
    try:
        return str(node["outputs"][0]["as_tensor"]["name"])[:100]
    except (KeyError, IndexError, TypeError):
        return f"#{index}"


def _check_signature(signature: dict[str, Any], mode: str) -> tuple[list[str], list[str]]:
    parameters, buffers = [], []
    for spec in signature.get("input_specs") or []:
        kind = next(iter(spec), None) if isinstance(spec, dict) and len(spec) == 1 else None
        if kind not in _INPUT_KINDS:
            _invalid(f"graphs.{mode}: input of kind {kind!r} is not allowed", f"graphs.{mode}")
        if kind == "parameter":
            parameters.append(str(spec[kind].get("parameter_name")))
        elif kind == "buffer":
            buffers.append(str(spec[kind].get("buffer_name")))
    for spec in signature.get("output_specs") or []:
        kind = next(iter(spec), None) if isinstance(spec, dict) and len(spec) == 1 else None
        if kind not in _OUTPUT_KINDS:
            _invalid(f"graphs.{mode}: output of kind {kind!r} is not allowed", f"graphs.{mode}")
    return parameters, buffers
