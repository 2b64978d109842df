"""The bookkeeping nouns of spec derivation: tensor references, links between axes,
and the union-find that merges linked axes into permutation groups.

An endpoint is one axis of one tensor: `(key, axis)`, where `key` is `"node:<fx node>"`
for an activation or `"param:<state-dict name>"` for a parameter or buffer. Op handlers
return `Links` (plain data); the tracer feeds them to an `AxisUnion`.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Endpoint = tuple[str, int]


@dataclass(frozen=True)
class TensorRef:
    """A tensor seen by the tracer: its endpoint key and shape."""

    key: str
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def axis(self, dim: int) -> Endpoint:
        """Endpoint of axis `dim` (negative counts from the end)."""
        if not -self.ndim <= dim < self.ndim:
            raise IndexError(f"{self.key} has {self.ndim} axes, no axis {dim}")
        return (self.key, dim % self.ndim)

    def axes(self) -> Iterator[Endpoint]:
        return (self.axis(d) for d in range(self.ndim))


@dataclass
class Links:
    """What one op says about axes: which share a permutation, which are fixed.

    `same` pairs must be permuted identically; `blocks` entries (a, b, k) say axis a
    holds axis b's units repeated k times blockwise (a flatten of channels times
    positions); `fixed` axes must never be permuted.
    """

    same: list[tuple[Endpoint, Endpoint]] = field(default_factory=list)
    blocks: list[tuple[Endpoint, Endpoint, int]] = field(default_factory=list)
    fixed: list[Endpoint] = field(default_factory=list)

    def join(self, a: Endpoint, b: Endpoint) -> "Links":
        self.same.append((a, b))
        return self

    def join_block(self, a: Endpoint, b: Endpoint, repeat: int) -> "Links":
        if repeat == 1:
            return self.join(a, b)
        self.blocks.append((a, b, repeat))
        return self

    def fix(self, *endpoints: Endpoint) -> "Links":
        self.fixed.extend(endpoints)
        return self

    def fix_all(self, *tensors: TensorRef) -> "Links":
        for tensor in tensors:
            self.fixed.extend(tensor.axes())
        return self

    def join_all(self, a: TensorRef, b: TensorRef) -> "Links":
        """Join two tensors axis by axis, right-aligned, where the sizes agree (broadcasting)."""
        for offset in range(1, min(a.ndim, b.ndim) + 1):
            if a.shape[-offset] == b.shape[-offset]:
                self.join(a.axis(-offset), b.axis(-offset))
        return self


@dataclass
class Call:
    """One traced op as its handler sees it.

    `args`/`kwargs` hold the evaluated arguments with every tensor replaced by its
    TensorRef (a tuple of tensors by a tuple of TensorRefs); `out` is the result's
    TensorRef (None for a non-tensor result); `parts` the results of an op returning
    a tuple of tensors (split, chunk, unbind); `module` and `path` are set for a
    module call.
    """

    out: TensorRef | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    module: Any = None
    path: str = ""
    parts: tuple[TensorRef, ...] = ()

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Argument by position or keyword."""
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)

    def param(self, name: str, shape: tuple[int, ...]) -> TensorRef:
        """The module's own parameter or buffer `name` (a state-dict entry)."""
        prefix = f"{self.path}." if self.path else ""
        return TensorRef(f"param:{prefix}{name}", shape)

    def tensors(self) -> list[TensorRef]:
        """Every tensor argument, in order, nested lists included."""
        return list(_tensor_refs((self.args, self.kwargs)))


def _tensor_refs(value: Any) -> Iterable[TensorRef]:
    if isinstance(value, TensorRef):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensor_refs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensor_refs(item)


class AxisUnion:
    """Union-find over endpoints, with blockwise repeats and a `fixed` mark per set.

    Every endpoint is its root's units repeated `factor` times blockwise
    (size = root size * factor), so a flattened axis and the channels it came from
    share one set. A set is fixed when any member is; links that cannot hold (a
    repeat that does not divide) fix both sets rather than guess.
    """

    def __init__(self) -> None:
        self._parent: dict[Endpoint, Endpoint] = {}
        self._factor: dict[Endpoint, int] = {}
        self._size: dict[Endpoint, int] = {}
        self._fixed: set[Endpoint] = set()
        self._in_graph: set[Endpoint] = set()

    def add(self, endpoint: Endpoint, size: int, in_graph: bool) -> None:
        """Register `endpoint` (idempotent); `in_graph` marks an activation axis."""
        if endpoint not in self._parent:
            self._parent[endpoint] = endpoint
            self._factor[endpoint] = 1
            self._size[endpoint] = size
        if in_graph:
            self._in_graph.add(self.find(endpoint)[0])

    def __contains__(self, endpoint: Endpoint) -> bool:
        return endpoint in self._parent

    def size(self, endpoint: Endpoint) -> int:
        return self._size[endpoint]

    def find(self, endpoint: Endpoint) -> tuple[Endpoint, int]:
        """(root, factor) with endpoint = root repeated `factor` times."""
        path = []
        while self._parent[endpoint] != endpoint:
            path.append(endpoint)
            endpoint = self._parent[endpoint]
        factor = 1
        for node in reversed(path):  # nearest the root first; compress as we go
            factor *= self._factor[node]
            self._parent[node], self._factor[node] = endpoint, factor
        return endpoint, factor

    def join(self, a: Endpoint, b: Endpoint, repeat: int = 1) -> None:
        """Record that `a` holds `b`'s units repeated `repeat` times blockwise."""
        root_a, factor_a = self.find(a)
        root_b, factor_b = self.find(b)
        wanted = factor_b * repeat  # a = root_a * factor_a = root_b * wanted
        if root_a == root_b:
            if factor_a != wanted:
                self._fixed.add(root_a)
        elif wanted % factor_a == 0:
            self._attach(root_a, root_b, wanted // factor_a)
        elif factor_a % wanted == 0:
            self._attach(root_b, root_a, factor_a // wanted)
        else:
            self._fixed.update((root_a, root_b))

    def _attach(self, child: Endpoint, root: Endpoint, factor: int) -> None:
        self._parent[child], self._factor[child] = root, factor
        if child in self._fixed:
            self._fixed.add(root)
        if child in self._in_graph:
            self._in_graph.add(root)

    def fix(self, endpoint: Endpoint) -> None:
        self._fixed.add(self.find(endpoint)[0])

    def is_fixed(self, root: Endpoint) -> bool:
        return root in self._fixed

    def in_graph(self, root: Endpoint) -> bool:
        """Whether the set of `root` holds an activation axis (not only parameter axes)."""
        return root in self._in_graph
