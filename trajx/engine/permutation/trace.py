"""Derive a model's permutation spec from its `torch.export` graph, and prove it.

`derive_spec` exports the model on an example input (`torch.export.export`, non-strict,
eval mode) and walks the ATen graph once: the rule of every op (`trajx.op_table` names
it, `trace_ops` implements it) says which axes of its arguments and results share a
permutation; an `AtomUnion` merges them. Parameters, buffers and inputs are the graph's
placeholders (`graph_signature` names them). Then:

- every axis of the model's inputs and outputs is fixed;
- a parameter axis carries at most one permutation: where several of its factors could
  move (heads and the features inside each head), the outermost is kept;
- a permutation is a group when it holds an activation axis and more than one unit;
  groups are named after their first parameter axis in state-dict order (`P_<param>_<dim>`,
  the names explicit specs use) and labelled after their modules (`group_labels`).

An op without a rule is refused, naming op, node and module, unless an explicit spec
names every parameter whose axes the op would leave unpermuted (then it is opaque: every
axis it touches stays fixed). An explicit spec naming every state-dict entry is used
without exporting. Each spec is proven by `check_spec` (selfcheck.py): permuting its
groups must leave the outputs unchanged.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import fx, nn
from torch.export import ExportedProgram

from trajx.engine.permutation.axis_groups import GroupRefs, groups_from_axes, one_group_per_axis
from trajx.engine.permutation.axis_links import (
    PARAM,
    AtomUnion,
    AxisMismatch,
    Call,
    Endpoint,
    Links,
    TensorRef,
)
from trajx.engine.permutation.explicit import merge_explicit, names_every_entry
from trajx.engine.permutation.group_labels import group_labels
from trajx.engine.permutation.selfcheck import check_spec, eval_mode, like_model
from trajx.engine.permutation.spec import PermutationSpec, spec_from_param_groups
from trajx.engine.permutation.trace_ops import HANDLERS, SPLITTING
from trajx.errors import InvalidInput, UnsupportedModel
from trajx.node_source import ADVICE, module_path, source_line
from trajx.op_table import refusal, rule_for

__all__ = ["check_spec", "derive_param_groups", "derive_spec", "export_model", "op_name"]


def op_name(target: Any) -> str:
    """The operator's name as `trajx.op_table` spells it: "aten.linear.default", "_operator.getitem"."""
    if isinstance(target, (torch._ops.OpOverload, str)):  # a str: get_attr's attribute name
        return str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"


def export_model(model: nn.Module, example_input: torch.Tensor) -> ExportedProgram:
    """`torch.export.export(model, (example_input,), strict=False)` in eval mode (the
    model's modes are restored). Raises UnsupportedModel(code="untraceable")."""
    with eval_mode(model):
        try:
            return torch.export.export(model, (like_model(model, example_input),), strict=False)
        except Exception as exc:  # export raises many types for what it cannot capture
            raise UnsupportedModel(
                f"cannot export {type(model).__name__} with torch.export.export ({type(exc).__name__}: "
                f"{(str(exc).strip().splitlines() or [''])[0][:300]}); give an explicit "
                "permutation_spec naming every tensor",
                code="untraceable", op="torch.export.export", node=type(model).__name__,
            ) from exc


@dataclass(frozen=True)
class _OpaqueOp:
    """An op without a rule, kept until the whole graph is linked (see `settle_opaque`)."""

    node: fx.Node
    reason: str
    endpoints: tuple[Endpoint, ...]
    params: tuple[str, ...]  # state-dict entries it reads directly


def _refusal(node: fx.Node, reason: str, **details: Any) -> UnsupportedModel:
    """Refuse `node`, naming its op, the module and source line torch.export recorded, and
    what to do (`node_source.ADVICE` unless `details` say more, as an opaque op's do)."""
    op = op_name(node.target)
    module = module_path(node.meta.get("nn_module_stack"))
    source = source_line(node.meta.get("stack_trace"))
    where = "".join([f" in module {module}" if module else "", f" at {source}" if source else ""])
    advice = "" if details else f"; {ADVICE}"
    details = {**details, **({"module": module} if module else {}), **({"source": source} if source else {})}
    return UnsupportedModel(
        f"cannot derive a permutation spec at node {node.name!r}{where}: op {op}: {reason}{advice}",
        code="unsupported_op", op=op, node=node.name, **details,
    )


def _fake_shapes(value: Any) -> tuple[int, ...] | list | None:
    if isinstance(value, torch.Tensor):
        return tuple(int(n) for n in value.shape)
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return [_fake_shapes(v) if isinstance(v, torch.Tensor) else None for v in value]
    return None


class _GraphLinks:
    """Walks an exported graph and records every op's links into `self.axes`.

    With `covered` (the names an explicit spec sets), an op without a rule is kept as
    opaque instead of being refused at once; `settle_opaque` then refuses it unless
    `covered` names every parameter it would leave unpermuted.
    """

    def __init__(self, program: ExportedProgram, state_keys: Sequence[str],
                 covered: Collection[str] | None) -> None:
        self.axes = AtomUnion()
        self._state_keys = set(state_keys)
        self._covered = covered
        self._opaque: list[_OpaqueOp] = []
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._refs: dict[fx.Node, TensorRef] = {}
        self._parts: dict[fx.Node, tuple[TensorRef | None, ...]] = {}
        signature = program.graph_signature
        self._state_of = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
        self._graph = program.graph

    def run(self) -> None:
        for node in self._graph.nodes:
            if node.op == "placeholder":
                self._placeholder(node)
            elif node.op == "output":
                nodes = [n for n in _flat(node.args) if isinstance(n, fx.Node)]
                outputs = [r for n in nodes for r in (self._refs.get(n), *self._parts.get(n, ()))]
                self._apply(Links().fix_all(*(r for r in outputs if r is not None)),
                            "it reaches the model's output")
            elif node.op == "call_function":
                self._call_function(node)
            else:  # get_attr of a submodule (a higher-order op's body), call_module
                raise _refusal(node, f"graph node kind {node.op!r} is not supported")

    def _register_value(self, node: fx.Node, key: str) -> None:
        value = node.meta.get("val")
        if any(not isinstance(n, int) for t in _flat(value) if isinstance(t, torch.Tensor) for n in t.shape):
            raise _refusal(node, "its result has a size that depends on the data (torch.export "
                                 "could not make it static)")
        shapes = _fake_shapes(value)
        if isinstance(shapes, tuple):
            self._refs[node] = self._ref(key, shapes)
        elif isinstance(shapes, list):
            self._parts[node] = tuple(None if s is None else self._ref(f"{key}.{i}", s)
                                      for i, s in enumerate(shapes))

    def _ref(self, key: str, shape: tuple[int, ...]) -> TensorRef:
        self._shapes[key] = shape
        return TensorRef(key, shape)

    def _placeholder(self, node: fx.Node) -> None:
        name = self._state_of.get(node.name)
        self._register_value(node, f"node:{node.name}" if name is None else PARAM + name)
        ref = self._refs.get(node)
        if ref is None:
            return
        if name is None:  # a user input or a lifted constant
            self._apply(Links().fix_all(ref), "it reaches the model's input")
        elif name not in self._state_keys:
            self._apply(Links().fix_all(ref), "a buffer outside the state dict")
        else:
            for endpoint in ref.axes():
                self._register(endpoint)

    def _call_function(self, node: fx.Node) -> None:
        self._register_value(node, f"node:{node.name}")
        op = op_name(node.target)
        rule = rule_for(op)
        call = self._call(node)
        if rule is None:
            reason = refusal(op)
        elif call.parts and rule not in SPLITTING:
            reason = "it returns several tensors"
        else:
            try:
                self._apply(HANDLERS[rule](call), f"op {op} at node {node.name!r}")
                return
            except UnsupportedModel as exc:
                reason = exc.details.get("reason", exc.message)
            except AxisMismatch as exc:
                reason = f"its rule does not fit: {exc}"
            except (TypeError, AttributeError, IndexError, KeyError, ValueError) as exc:
                # an argument of a form the rule never met (an uploaded graph may hold anything)
                reason = f"its rule cannot read this call ({type(exc).__name__}: {exc})"
        if self._covered is None:
            raise _refusal(node, reason)
        # Linked later: which groups it cuts is only known once the whole graph is.
        touched = [*call.tensors(), *([call.out] if call.out else []), *(p for p in call.parts if p)]
        params = tuple(t.key[len(PARAM):] for t in call.tensors() if t.key.startswith(PARAM))
        self._opaque.append(_OpaqueOp(node, reason, tuple(e for t in touched for e in t.axes()), params))

    def _call(self, node: fx.Node) -> Call:
        def convert(value: Any) -> Any:
            if isinstance(value, fx.Node):
                return self._refs.get(value) or self._parts.get(value)
            if isinstance(value, (list, tuple)):
                return type(value)(convert(v) for v in value)
            return value

        args, kwargs = convert(node.args), convert(node.kwargs)
        schema = getattr(node.target, "_schema", None)
        if schema is None:  # operator.getitem
            named = dict(zip(("self", "index"), args))
        else:
            named = {}
            for i, argument in enumerate(schema.arguments):
                if i < len(args) and not argument.kwarg_only:
                    named[argument.name] = args[i]
                elif argument.name in kwargs:
                    named[argument.name] = kwargs[argument.name]
                elif argument.has_default_value():
                    named[argument.name] = argument.default_value
        return Call(self._refs.get(node), named, self._parts.get(node, ()))

    def _apply(self, links: Links, why: str) -> None:
        for key, shape in links.virtual.items():
            self._shapes[key] = shape
        for a, b in links.same:
            for endpoint in (*a, *b):
                self._register(endpoint)
            self.axes.join(a, b, why)
        for endpoint in links.fixed:
            self._register(endpoint)
            self.axes.fix(endpoint, why)

    def _register(self, endpoint: Endpoint) -> None:
        key, dim = endpoint
        if endpoint not in self.axes:
            self.axes.add(endpoint, self._shapes[key][dim], in_graph=not key.startswith(PARAM))

    def join_aliases(self, aliases: Sequence[Sequence[str]]) -> None:
        """Tie the axes of state-dict names that hold one tensor (tied weights)."""
        links = Links()
        for first, *rest in aliases:
            for name in rest:
                for dim in range(len(self._shapes[PARAM + name])):
                    links.join((PARAM + first, dim), (PARAM + name, dim))
        self._apply(links, "tied weights")

    def add_state(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Register state entries the graph never reads (their axes stay unlinked)."""
        for name, shape in shapes.items():
            self._shapes.setdefault(PARAM + name, shape)

    def settle_opaque(self) -> None:
        """Fix every axis an opaque op touches, once the parameters it would leave
        unpermuted are all named by the explicit spec; else refuse the first such op.

        Those parameters: the ones in a group the op cuts (a class that would have been
        a group without it), and the ones it reads directly.
        """
        if not self._opaque:
            return
        for op in self._opaque:
            for endpoint in op.endpoints:
                self._register(endpoint)
        params_of = self._params_by_class()
        for op in self._opaque:
            classes = {self.axes.root(a) for e in op.endpoints for a in self.axes.leaves(e)
                       if self.axes.is_live(a)}
            cut = {p for c in classes for p in params_of.get(c, ())} | set(op.params)
            missing = sorted(cut - set(self._covered))
            if missing:
                raise _refusal(
                    op.node,
                    f"{op.reason}; as an opaque op it would leave {missing} unpermuted, so an "
                    "explicit permutation_spec must name each of them (null axes to keep them fixed)",
                    uncovered=missing)
        for op in self._opaque:
            for endpoint in op.endpoints:
                self.axes.fix(endpoint, f"op {op_name(op.node.target)} at node {op.node.name!r} (opaque)")

    def _params_by_class(self) -> dict[int, set[str]]:
        params_of: dict[int, set[str]] = {}
        for name in self._state_keys:
            for dim in range(len(self._shapes.get(PARAM + name, ()))):
                if (PARAM + name, dim) in self.axes:
                    for atom in self.axes.leaves((PARAM + name, dim)):
                        params_of.setdefault(self.axes.root(atom), set()).add(name)
        return params_of


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _flat(item)]
    return [value]


def _aliases(state: Mapping[str, torch.Tensor]) -> list[list[str]]:
    by_tensor: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        if tensor.numel():
            key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
            by_tensor.setdefault(key, []).append(name)
    return [names for names in by_tensor.values() if len(names) > 1]


def _derive(model: nn.Module, example_input: torch.Tensor, covered: Collection[str] | None,
            program: ExportedProgram | None) -> tuple[dict[str, GroupRefs], dict[str, str]]:
    state = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    program = program if program is not None else export_model(model, example_input)
    walk = _GraphLinks(program, list(state), covered)
    walk.add_state(shapes)
    walk.run()
    walk.join_aliases(_aliases(state))
    walk.settle_opaque()
    one_group_per_axis(walk.axes, shapes)
    return groups_from_axes(walk.axes, shapes)


def derive_param_groups(model: nn.Module, example_input: torch.Tensor,
                        covered: Collection[str] | None = None, *,
                        program: ExportedProgram | None = None) -> dict[str, GroupRefs]:
    """Export `model` on `example_input` (or read `program`, its export):
    `state-dict name -> group reference per axis`.

    `covered`: the state-dict names an explicit spec sets; an op without a rule is then
    opaque if every parameter it would leave unpermuted is among them. No self-check
    (see `derive_spec`). Raises UnsupportedModel (code "unsupported_op" naming op, node
    and module, plus `uncovered` names for an opaque op; or "untraceable").
    """
    return _derive(model, example_input, covered, program)[0]


def derive_spec(model: nn.Module, example_input: torch.Tensor,
                explicit: Mapping[str, Sequence[str | None]] | None = None, *,
                generator: torch.Generator | None = None,
                program: ExportedProgram | None = None) -> PermutationSpec:
    """The permutation spec of `model`, derived from its exported graph and proven by `check_spec`.

    `example_input` is one input batch (moved to the model's device and float dtype);
    the model's parameters, buffers and train/eval modes are left as they were.
    `program`: the model's `torch.export` program when it already exists (an uploaded
    one, with `program.module()` as `model`); it is read instead of exporting again.

    `explicit` (`state-dict name -> group per axis`, the job spec's JSON) overrides the
    derived entries it names; one naming every state-dict entry is used as it is, without
    exporting (so a model export cannot capture still works). An op without a rule is
    still refused unless `explicit` names every parameter whose axes the op would leave
    unpermuted; then its axes stay fixed and the explicit entries say what those
    parameters do. `spec.fixed_axes` says, for each parameter axis that stays in place
    though it could have moved, what fixed it. Raises UnsupportedModel ("unsupported_op",
    "untraceable", "spec_self_check_failed") and InvalidInput ("invalid_permutation_spec")
    for a malformed explicit spec.
    """
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if explicit is not None and names_every_entry(explicit, shapes):
        refs, fixed = {}, {}
    else:
        refs, fixed = _derive(model, example_input, None if explicit is None else set(explicit), program)
    if explicit is not None:
        refs = merge_explicit(refs, explicit, shapes)
        fixed = {k: v for k, v in fixed.items() if k.rsplit("[", 1)[0] not in explicit}
    try:
        spec = spec_from_param_groups(refs, shapes)
    except ValueError as exc:
        raise InvalidInput(f"permutation_spec: {exc}", code="invalid_permutation_spec") from None
    checked = check_spec(model, spec, example_input, generator or torch.Generator().manual_seed(0))
    return replace(spec, fixed_axes=fixed, self_check=checked, labels=group_labels(spec.groups))
