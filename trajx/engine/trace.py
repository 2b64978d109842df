"""Derive a model's permutation spec by tracing it, and prove it by a self-check.

`derive_spec` traces the model with torch.fx, runs the graph once on an example input
(one `torch.fx.Interpreter` walk), asks the handler of every op (`trace_ops`) which
axes share a permutation, merges them in an `AxisUnion` and reads the groups off it:
a group touching the model's input or output, of size 1, or made of parameter axes
alone is fixed. An op without a handler is refused, naming op and node, unless an
explicit spec names every parameter whose axes the op would leave unpermuted (then
it is opaque: every axis it touches stays fixed). Each spec is then proven by
`check_spec` (selfcheck.py): permuting its groups must leave the outputs unchanged.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.fx.node import _get_qualified_name
from torch.overrides import resolve_name
from torch.utils._pytree import tree_leaves

from trajx.engine.axis_links import AxisUnion, Call, Endpoint, Links, TensorRef
from trajx.engine.explicit import merge_explicit
from trajx.engine.permspec import PermutationSpec, spec_from_param_groups
from trajx.engine.selfcheck import check_spec, eval_mode, like_model
from trajx.engine.trace_ops import (
    FUNCTION_HANDLERS,
    METHOD_HANDLERS,
    MODULE_HANDLERS,
    SPLITTING,
    Handler,
)
from trajx.errors import InvalidInput, UnsupportedModel

__all__ = ["check_spec", "derive_param_groups", "derive_spec"]

PARAM = "param:"


class _AxisMismatch(Exception):
    """An op's rule linked axes whose sizes do not fit: the op is not what the rule assumes."""


@dataclass(frozen=True)
class _OpaqueOp:
    """An op without a rule, kept until the whole graph is linked (see `settle_opaque`)."""

    node: fx.Node
    module: nn.Module | None
    reason: str
    endpoints: tuple[Endpoint, ...]


def _op_name(node: fx.Node, module: nn.Module | None) -> str:
    if node.op == "call_module":
        return f"{type(module).__module__}.{type(module).__qualname__}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return resolve_name(node.target) or _get_qualified_name(node.target)


def _contains_tensor(value: Any) -> bool:
    return any(isinstance(leaf, torch.Tensor) for leaf in tree_leaves(value))


class _AxisTracer(fx.Interpreter):
    """Runs the graph and records every op's links into `self.axes`.

    With `covered` (the names an explicit spec sets), an op without a rule is kept as
    opaque instead of being refused at once; `settle_opaque` then refuses it unless
    `covered` names every parameter it would leave unpermuted.
    """

    def __init__(self, module: fx.GraphModule, state_keys: Sequence[str],
                 covered: Collection[str] | None) -> None:
        super().__init__(module)
        self.axes = AxisUnion()
        self._refs: dict[fx.Node, TensorRef] = {}
        self._parts: dict[fx.Node, tuple[TensorRef, ...]] = {}  # results of split-like ops
        self._state_keys = set(state_keys)
        self._covered = covered
        self._opaque: list[_OpaqueOp] = []
        named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
        self._shapes: dict[str, tuple[int, ...]] = {PARAM + n: tuple(t.shape) for n, t in named}

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if isinstance(value, torch.Tensor):
            self._refs[node] = self._ref(f"node:{node.name}", value)
        elif isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
            self._parts[node] = tuple(self._ref(f"node:{node.name}.{i}", v) for i, v in enumerate(value))
        self._record(node, value)
        return value

    def _ref(self, key: str, value: torch.Tensor) -> TensorRef:
        self._shapes[key] = tuple(value.shape)
        return TensorRef(key, tuple(value.shape))

    def _record(self, node: fx.Node, value: Any) -> None:
        out = self._refs.get(node)
        if node.op == "placeholder":
            self._apply(Links().fix_all(out) if out else Links())
        elif node.op == "output":
            self._apply(Links().fix_all(*self._call(node, None).tensors()))
        elif node.op == "get_attr":
            self._apply(self._get_attr_links(node, out))
        else:
            module = self.module.get_submodule(node.target) if node.op == "call_module" else None
            try:
                self._apply(self._op_links(node, module, self._call(node, module), value))
            except _AxisMismatch as exc:
                raise self._refusal(node, module, str(exc)) from None

    def _get_attr_links(self, node: fx.Node, out: TensorRef | None) -> Links:
        if out is None:
            return Links()
        if node.target not in self._state_keys:  # a constant tensor: nothing to permute
            return Links().fix_all(out)
        param = TensorRef(PARAM + node.target, out.shape)
        links = Links()
        for dim in range(out.ndim):
            links.join(out.axis(dim), param.axis(dim))
        return links

    def _op_links(self, node: fx.Node, module: nn.Module | None, call: Call, value: Any) -> Links:
        if call.out is None and not call.tensors() and not _contains_tensor(value):
            return Links()  # arithmetic on sizes and other plain Python values
        handler = self._handler(node, module)
        if call.out is None and _contains_tensor(value) and not (call.parts and handler in SPLITTING):
            reason = "it returns several tensors"
        elif handler is None:
            reason = "no rule for this op"
        else:
            try:
                return handler(call)
            except UnsupportedModel as exc:
                reason = exc.details.get("reason", exc.message)
        if self._covered is None:
            raise self._refusal(node, module, reason)
        # Linked later: which groups it cuts is only known once the whole graph is.
        touched = [*call.tensors(), *([call.out] if call.out else [])]
        self._opaque.append(_OpaqueOp(node, module, reason,
                                      tuple(e for t in touched for e in t.axes())))
        return Links()

    def settle_opaque(self) -> None:
        """Fix every axis an opaque op touches, once the parameters it would leave
        unpermuted are all named by the explicit spec; else refuse the first such op.

        Those parameters: the ones in a group the op cuts (a set that would have been a
        group without it), and the op module's own state (tracing never sees inside it).
        """
        if not self._opaque:
            return
        params_of = self._params_by_root()
        for op in self._opaque:
            roots = {self.axes.find(e)[0] for e in op.endpoints}
            cut = {p for r in roots if _is_group(self.axes, r) for p in params_of.get(r, ())}
            if op.module is not None:
                cut |= {k for k in self._state_keys if k.startswith(f"{op.node.target}.")}
            missing = sorted(cut - set(self._covered))
            if missing:
                raise self._refusal(
                    op.node, op.module,
                    f"{op.reason}; as an opaque op it would leave {missing} unpermuted, so an "
                    "explicit permutation_spec must name each of them (null axes to keep them fixed)",
                    uncovered=missing)
        for op in self._opaque:
            for endpoint in op.endpoints:
                self.axes.fix(endpoint)

    def _params_by_root(self) -> dict[Endpoint, set[str]]:
        """State-dict names per set root (opaque ops' axes registered first)."""
        for op in self._opaque:
            for endpoint in op.endpoints:
                self._register(endpoint)
        params_of: dict[Endpoint, set[str]] = {}
        for name in self._state_keys:
            for dim in range(len(self._shapes[PARAM + name])):
                if (PARAM + name, dim) in self.axes:
                    params_of.setdefault(self.axes.find((PARAM + name, dim))[0], set()).add(name)
        return params_of

    @staticmethod
    def _refusal(node: fx.Node, module: nn.Module | None, reason: str, **details: Any) -> UnsupportedModel:
        op = _op_name(node, module)
        where = f" (module {node.target!r})" if module is not None else ""
        advice = "" if details else "; give an explicit permutation_spec for this model"
        return UnsupportedModel(
            f"cannot derive a permutation spec at node {node.name!r}{where}: op {op}: {reason}{advice}",
            code="unsupported_op", op=op, node=node.name, **details,
        )

    def _handler(self, node: fx.Node, module: nn.Module | None) -> Handler | None:
        if node.op == "call_module":
            return MODULE_HANDLERS.get(type(module))
        if node.op == "call_method":
            return METHOD_HANDLERS.get(node.target)
        return FUNCTION_HANDLERS.get(node.target)

    def _call(self, node: fx.Node, module: nn.Module | None) -> Call:
        def convert(value: Any) -> Any:
            if isinstance(value, fx.Node):
                return self._refs.get(value) or self._parts.get(value) or self.env.get(value)
            if isinstance(value, (list, tuple)):
                return type(value)(convert(v) for v in value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, slice):
                return slice(convert(value.start), convert(value.stop), convert(value.step))
            return value

        return Call(self._refs.get(node), convert(node.args), convert(node.kwargs), module,
                    node.target if module is not None else "", self._parts.get(node, ()))

    def _apply(self, links: Links) -> None:
        for a, b in links.same:
            self._join(a, b, 1)
        for a, b, repeat in links.blocks:
            self._join(a, b, repeat)
        for endpoint in links.fixed:
            self._register(endpoint)
            self.axes.fix(endpoint)

    def _join(self, a: Endpoint, b: Endpoint, repeat: int) -> None:
        self._register(a)
        self._register(b)
        if self.axes.size(a) != self.axes.size(b) * repeat:
            raise _AxisMismatch(
                f"its rule links axis {a[1]} of {a[0]} (size {self.axes.size(a)}) to axis {b[1]} "
                f"of {b[0]} (size {self.axes.size(b)}) repeated {repeat} times"
            )
        self.axes.join(a, b, repeat)

    def _register(self, endpoint: Endpoint) -> None:
        key, dim = endpoint
        if endpoint in self.axes:
            return
        is_param = key.startswith(PARAM)
        self.axes.add(endpoint, self._shapes[key][dim], in_graph=not is_param)
        if is_param and key[len(PARAM):] not in self._state_keys:  # a non-persistent buffer
            self.axes.fix(endpoint)

    def join_aliases(self, aliases: Sequence[Sequence[str]]) -> None:
        """Tie the axes of state-dict names that hold one tensor (tied weights)."""
        for names in aliases:
            first, *rest = names
            for name in rest:
                for dim in range(len(self._shapes[PARAM + name])):
                    self._join((PARAM + first, dim), (PARAM + name, dim), 1)


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for data-dependent control flow
        raise UnsupportedModel(
            f"cannot trace {type(model).__name__} with torch.fx.symbolic_trace ({type(exc).__name__}: {exc}); "
            "give an explicit permutation_spec",
            code="untraceable", op="torch.fx.symbolic_trace", node=type(model).__name__,
        ) from exc


def _aliases(state: Mapping[str, torch.Tensor]) -> list[list[str]]:
    by_tensor: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        if tensor.numel():
            key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
            by_tensor.setdefault(key, []).append(name)
    return [names for names in by_tensor.values() if len(names) > 1]


def _is_group(axes: AxisUnion, root: Endpoint) -> bool:
    """Whether the set of `root` becomes a permutation group (see the module docstring)."""
    return not axes.is_fixed(root) and axes.in_graph(root) and axes.size(root) > 1


def _groups_from_axes(axes: AxisUnion, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[str | None, ...]]:
    """`param -> group reference per axis`, groups named after their first parameter axis."""
    names: dict[Endpoint, str] = {}
    refs: dict[str, tuple[str | None, ...]] = {}
    for param, shape in shapes.items():
        entry: list[str | None] = []
        for dim in range(len(shape)):
            endpoint = (PARAM + param, dim)
            if endpoint not in axes:
                entry.append(None)
                continue
            root, repeat = axes.find(endpoint)
            if not _is_group(axes, root):
                entry.append(None)
                continue
            name = names.setdefault(root, f"P_{param}_{dim}")
            entry.append(name if repeat == 1 else f"{name}*{repeat}")
        refs[param] = tuple(entry)
    return refs


def derive_param_groups(model: nn.Module, example_input: torch.Tensor,
                        covered: Collection[str] | None = None) -> dict[str, tuple[str | None, ...]]:
    """Trace `model` on `example_input`: `state-dict name -> group reference per axis`.

    `covered`: the state-dict names an explicit spec sets; an op without a rule is then
    opaque if every parameter it would leave unpermuted is among them. No self-check
    (see `derive_spec`). Raises UnsupportedModel (code "unsupported_op" naming op and
    node, plus `uncovered` names for an opaque op; or "untraceable").
    """
    state = model.state_dict()
    graph = _trace(model)
    tracer = _AxisTracer(graph, list(state), covered)
    with eval_mode(graph), torch.no_grad():  # BatchNorm must not update its statistics
        tracer.run(like_model(model, example_input))
    tracer.join_aliases(_aliases(state))
    tracer.settle_opaque()
    return _groups_from_axes(tracer.axes, {k: tuple(v.shape) for k, v in state.items()})


def derive_spec(model: nn.Module, example_input: torch.Tensor,
                explicit: Mapping[str, Sequence[str | None]] | None = None, *,
                generator: torch.Generator | None = None) -> PermutationSpec:
    """The permutation spec of `model`, derived by tracing and proven by `check_spec`.

    `example_input` is one input batch (moved to the model's device and float dtype);
    the model's parameters, buffers and train/eval modes are left as they were.

    `explicit` (`state-dict name -> group per axis`, the job spec's JSON) overrides the
    derived entries it names. An op tracing cannot handle is still refused unless
    `explicit` names every parameter whose axes the op would leave unpermuted (the
    groups it cuts and its module's own state); then its axes stay fixed and the
    explicit entries say what those parameters do. Raises UnsupportedModel
    ("unsupported_op", "untraceable", "spec_self_check_failed") and InvalidInput
    ("invalid_permutation_spec") for a malformed explicit spec.
    """
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    refs = derive_param_groups(model, example_input, covered=None if explicit is None else set(explicit))
    if explicit is not None:
        refs = merge_explicit(refs, explicit, shapes)
    try:
        spec = spec_from_param_groups(refs, shapes)
    except ValueError as exc:
        raise InvalidInput(f"permutation_spec: {exc}", code="invalid_permutation_spec") from None
    check_spec(model, spec, example_input, generator or torch.Generator().manual_seed(0))
    return spec
