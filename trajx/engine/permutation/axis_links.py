"""The bookkeeping nouns of spec derivation: tensor references, links between axes,
and the union-find that merges linked axes into permutation groups.

An endpoint is one axis of one tensor: `(key, axis)`, where `key` is `"node:<graph node>"`
for an activation or `"param:<state-dict name>"` for a parameter or buffer. Op handlers
return `Links` (plain data); the tracer feeds them to an `AtomUnion`.

Why atoms: a reshape splits and merges axes. An axis of a fused q/k/v projection is
(3, heads, head_dim) flattened; a view later merges the batch with the heads. Every axis
is therefore kept as a sequence of *atoms* (its factors, outermost first), and a link
between axes is a link between their atom sequences, refined to a common factorization
(an atom of size 24 met by (3, 8) is split into two atoms everywhere it occurs). Each
atom class is one candidate permutation; a parameter axis can carry one of them, as its
group tiled over the atoms before it and repeated over the atoms after it.
"""

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Endpoint = tuple[str, int]
PARAM = "param:"  # key prefix of a state-dict entry's endpoints


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

    `same` entries (A, B) say the axes A, read one after another (row-major), hold the
    same units as the axes B: one axis each for an element-wise op, several for a
    reshape. `fixed` axes must never be permuted. `virtual` declares helper axes that no
    tensor has (the query heads sharing one key/value head), by key and shape.
    """

    same: list[tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]]] = field(default_factory=list)
    fixed: list[Endpoint] = field(default_factory=list)
    virtual: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def join(self, a: Endpoint, b: Endpoint) -> "Links":
        self.same.append(((a,), (b,)))
        return self

    def join_seq(self, a: Iterable[Endpoint], b: Iterable[Endpoint]) -> "Links":
        """The axes `a` read together hold the same units as the axes `b` read together."""
        self.same.append((tuple(a), tuple(b)))
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

    def add_virtual(self, key: str, size: int) -> Endpoint:
        """A helper axis of `size` units (its own atom), known only to this op's links."""
        self.virtual[key] = (size,)
        return (key, 0)


@dataclass
class Call:
    """One graph op as its handler sees it.

    `args` maps each argument name of the op's schema to its value, every tensor
    replaced by its TensorRef (a list of tensors by a list of TensorRefs); `out` is the
    result's TensorRef (None for a non-tensor result); `parts` the results of an op
    returning several tensors (split, unbind, native_layer_norm).
    """

    out: TensorRef | None
    args: dict[str, Any]
    parts: tuple[TensorRef | None, ...] = ()

    def arg(self, name: str, default: Any = None) -> Any:
        value = self.args.get(name, default)
        return default if value is None else value

    def tensors(self) -> list[TensorRef]:
        """Every tensor argument, in order, nested lists included."""
        return list(_tensor_refs(self.args))


def _tensor_refs(value: Any) -> Iterable[TensorRef]:
    if isinstance(value, TensorRef):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensor_refs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensor_refs(item)


class AxisMismatch(Exception):
    """Linked axes whose sizes do not fit: the op is not what its rule assumes."""


class AtomUnion:
    """Union-find over atoms (the factors of axes), with a `fixed` mark per class.

    Every registered endpoint is a sequence of atoms; `leaves(endpoint)` reads it in the
    current finest factorization. A class is fixed when any member is; `why` keeps the
    first reason it was fixed. A link that admits no common factorization fixes both sides.
    """

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._split: dict[int, tuple[int, ...]] = {}  # class root -> its sub-atoms
        self._fixed: dict[int, str] = {}  # class root -> why
        self._in_graph: set[int] = set()
        self._axes: dict[Endpoint, tuple[int, ...]] = {}

    def _new(self, size: int, like: int | None = None) -> int:
        atom = len(self._parent)
        self._parent.append(atom)
        self._size.append(size)
        if like is not None:
            if like in self._fixed:
                self._fixed[atom] = self._fixed[like]
            if like in self._in_graph:
                self._in_graph.add(atom)
        return atom

    def add(self, endpoint: Endpoint, size: int, in_graph: bool) -> None:
        """Register `endpoint` (idempotent); `in_graph` marks an activation axis."""
        if endpoint not in self._axes:
            self._axes[endpoint] = (self._new(size),)
        if in_graph:
            self._in_graph.update(self.leaves(endpoint))

    def __contains__(self, endpoint: Endpoint) -> bool:
        return endpoint in self._axes

    def size(self, endpoint: Endpoint) -> int:
        return math.prod(self._size[a] for a in self._axes[endpoint])

    def root(self, atom: int) -> int:
        while self._parent[atom] != atom:
            self._parent[atom] = self._parent[self._parent[atom]]
            atom = self._parent[atom]
        return atom

    def _expand(self, atom: int) -> list[int]:
        root = self.root(atom)
        if root not in self._split:
            return [root]
        return [leaf for sub in self._split[root] for leaf in self._expand(sub)]

    def leaves(self, endpoint: Endpoint) -> list[int]:
        """The atom classes of `endpoint`, outermost first, in the finest factorization."""
        return [leaf for atom in self._axes[endpoint] for leaf in self._expand(atom)]

    def atom_size(self, atom: int) -> int:
        return self._size[atom]

    def join(self, a: tuple[Endpoint, ...], b: tuple[Endpoint, ...], why: str) -> None:
        """The axes `a` read together hold the same units as the axes `b` read together;
        `why` is kept as the reason when they admit no common factorization."""
        total_a = math.prod(self.size(e) for e in a)
        total_b = math.prod(self.size(e) for e in b)
        if total_a != total_b:
            raise AxisMismatch(f"{_describe(a, self)} (size {total_a}) cannot hold the units of "
                               f"{_describe(b, self)} (size {total_b})")
        if total_a == 0:  # an empty tensor: no units to move
            for endpoint in (*a, *b):
                self.fix(endpoint, why)
            return
        while True:
            left = [x for e in a for x in self.leaves(e) if self._size[x] > 1]
            right = [x for e in b for x in self.leaves(e) if self._size[x] > 1]
            step = self._first_difference(left, right)
            if step is None:
                break
            if step is False:  # no common factorization: nothing there can move
                for atom in left + right:
                    self._fix_root(self.root(atom), f"{why} regroups units unevenly")
                return
        for x, y in zip(left, right):
            self._union(x, y)

    def _first_difference(self, left: list[int], right: list[int]) -> bool | None:
        """Split the first atom that straddles a boundary of the other side; None when
        both sides already have one factorization, False when none exists."""
        for x, y in zip(left, right):
            sx, sy = self._size[x], self._size[y]
            if sx == sy:
                continue
            big, small = (x, sy) if sx > sy else (y, sx)
            if self._size[big] % small:
                return False
            self._split_root(big, small)
            return True
        return None

    def _split_root(self, root: int, outer: int) -> None:
        inner = self._size[root] // outer
        self._split[root] = (self._new(outer, like=root), self._new(inner, like=root))

    def _union(self, x: int, y: int) -> None:
        rx, ry = self.root(x), self.root(y)
        if rx == ry:
            return
        self._parent[rx] = ry
        if rx in self._fixed and ry not in self._fixed:
            self._fixed[ry] = self._fixed[rx]
        if rx in self._in_graph:
            self._in_graph.add(ry)

    def _fix_root(self, root: int, why: str) -> None:
        self._fixed.setdefault(root, why)

    def fix(self, endpoint: Endpoint, why: str) -> None:
        for atom in self.leaves(endpoint):
            self._fix_root(atom, why)

    def fix_atom(self, atom: int, why: str) -> None:
        self._fix_root(self.root(atom), why)

    def why_fixed(self, atom: int) -> str | None:
        return self._fixed.get(self.root(atom))

    def is_live(self, atom: int) -> bool:
        """Whether the class of `atom` can be a permutation group: not fixed, holding
        an activation axis (not parameter axes alone), more than one unit."""
        root = self.root(atom)
        return root not in self._fixed and root in self._in_graph and self._size[root] > 1


def _describe(endpoints: tuple[Endpoint, ...], axes: AtomUnion) -> str:
    return " x ".join(f"axis {d} of {k}" for k, d in endpoints)
