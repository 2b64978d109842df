"""Cost matrices of weight matching, kept up to date instead of rebuilt.

For a group g, C_g[i, j] = Σ_pairs Σ_axes of g ⟨target unit i, source unit j⟩ with every
other axis of the source permuted (its neighbours' permutations). FGMT adds one pair per
step and between two solves of g only some units of its neighbours move, so `GroupCosts`
keeps each C_g and brings it up to date with
- the pairs added since, under the current permutation: one matrix product per axis over
  the new pairs only (matching work per step that grows with T, not T²);
- for each neighbour h whose permutation moved on the units K, the difference on those
  units only, Σ_pairs T[.., K, ..] (S[.., π_new(K), ..] − S[.., π_old(K), ..]): |K|/size of
  a rebuild. When more than half of h's units moved, C_g is rebuilt instead.
Terms with no other permuted axis (an embedding's vocabulary, a LayerNorm's scale) do not
depend on any permutation: where they hold at least n_g² elements per pair, their sum is
kept apart (`_Cost.fixed`) so a rebuild starts from it instead of recomputing them (for
GPT-2's residual group that is the 50257 x 768 embedding, most of a rebuild).
The objective Σ⟨target, π source⟩ is carried over the same way.

Products run on the pairs' device in float32 (bfloat16/float16 pairs are widened,
exactly), one product per piece of about `_CHUNK_ELEMENTS` elements, and the pieces are
summed into a float64 matrix. Each entry of a piece's product is a sum of k terms, so its
error is at most γ_k · (|A||B|)_ij with γ_k = k·u / (1 − k·u), u = 2⁻²⁴ (the standard bound
for a float32 dot product of length k; blocked GEMMs stay inside it), and the float64 sum of
the pieces adds ~1e-16 relative: `product_error_bound` computes the bound, and
tests/engine/test_matching_identity.py checks updated, rebuilt and float64 matrices against
it. So an updated and a rebuilt matrix may differ by ~1e-7 relative, more than the 1e-9
tie-breaking perturbation of the solvers: which one a solve sees is fixed by the run's order
of events, so results are deterministic, but not bit-identical to the float64 sums of the
revision before issue 29 (whose quality they match: docs/scale.md). Pieces (runs of pairs, or
ranges of one large pair's free axis, e.g. an embedding's vocabulary) keep the float32
copies small; a stack is never copied whole.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from trajx.engine.permutation.spec import Permutation, PermutationSpec, expand_index, select_along

# Elements of one parameter's pair stack handled per chunk: bounds the float32 copies.
_CHUNK_ELEMENTS = 1 << 20


class Pairs(Protocol):
    """What GroupCosts reads from a PairBank."""

    names: tuple[str, ...]

    def __len__(self) -> int: ...

    def pair_stacks(self, name: str) -> tuple[torch.Tensor, torch.Tensor]: ...


# A permuted axis: (axis, group, repeat, tile) as in permspec.Axis.
Layout = tuple[int, str, int, int]


@dataclass(frozen=True)
class _Term:
    """Axis `dim` of `param` (holding its group `tile` times) in a group's cost; `others`
    are the parameter's other permuted axes."""

    param: str
    dim: int
    tile: int
    others: tuple[Layout, ...]


@dataclass
class _Cost:
    matrix: torch.Tensor  # [size, size] float64 on the pairs' device (pieces summed in float32)
    count: int  # pairs summed into it
    under: Permutation  # the permutation of every neighbour it was summed under
    fixed: torch.Tensor | None = None  # the permutation-free terms' part of `matrix`, when kept apart


class GroupCosts:
    """Cost matrices and objective of one pair bank, updated as pairs and permutations change.

    Valid while the bank's pairs are only appended to; build a new one when a stored pair
    is overwritten (PairBank.costs does).
    """

    def __init__(self, spec: PermutationSpec, pairs: Pairs) -> None:
        self.spec = spec
        self.pairs = pairs
        self._terms = {g.name: _terms(spec, g.name, pairs.names) for g in spec.groups}
        self._keeps_fixed = {g.name: _worth_keeping_fixed(g.size, self._terms[g.name], pairs)
                             for g in spec.groups}
        self._costs: dict[str, _Cost] = {}
        self._objective: tuple[int, Permutation, float] | None = None

    def cost(self, group: str, perm: Permutation) -> np.ndarray:
        """C_group under `perm` (other groups applied) as a read-only float64 array: on the
        CPU a view of the kept matrix (no n x n copy), valid until this group's next `cost`."""
        entry = self._costs.get(group)
        if entry is None:
            entry = self._costs[group] = self._build(group, perm)
        elif not self._catch_up(group, entry, perm):
            entry = self._costs[group] = self._rebuild(group, entry, perm)
        if entry.count < len(self.pairs):
            for term in self._terms[group]:
                self._add_products(_sums(entry.matrix, entry.fixed, term), term, perm, entry.count, len(self.pairs))
            entry.count = len(self.pairs)
        view = entry.matrix.cpu().numpy()
        view.flags.writeable = False
        return view

    def objective(self, perm: Permutation) -> float:
        """Σ_pairs ⟨target, π source⟩: the remembered value plus the pairs added since."""
        start, total = 0, 0.0
        if self._objective is not None and _same(self._objective[1], perm):
            start, total = self._objective[0], self._objective[2]
        for name in self.pairs.names:
            target, source = self.pairs.pair_stacks(name)
            axes = _permuted_axes(self.spec, name, skip=None)
            for block in _blocks(target, start, len(self.pairs), keep=()):
                moved = _piece(source, block, axes, perm)
                total += float(torch.dot(_compute(_piece(target, block)).reshape(-1), _compute(moved).reshape(-1)))
        return total

    def remember_objective(self, perm: Permutation, value: float) -> None:
        """The objective reached at `perm` with all current pairs (the next call starts there)."""
        self._objective = (len(self.pairs), _snapshot(perm), value)

    # -- updates ---------------------------------------------------------------------

    def _build(self, group: str, perm: Permutation) -> _Cost:
        """C_group from scratch over every pair, its permutation-free part kept apart when worth it."""
        size = self.spec.group(group).size
        matrix = torch.zeros(size, size, dtype=torch.float64, device=self._device())
        fixed = torch.zeros_like(matrix) if self._keeps_fixed[group] else None
        for term in self._terms[group]:
            self._add_products(_sums(matrix, fixed, term), term, perm, 0, len(self.pairs))
        return _Cost(matrix, len(self.pairs), _snapshot(perm), fixed)

    def _rebuild(self, group: str, entry: _Cost, perm: Permutation) -> _Cost:
        """C_group under `perm` over entry's pairs: the kept permutation-free part plus the
        other terms recomputed (everything, when that part is not kept)."""
        if entry.fixed is None:
            return self._build(group, perm)
        matrix = entry.matrix.copy_(entry.fixed)
        for term in self._terms[group]:
            if term.others:
                self._add_products((matrix,), term, perm, 0, entry.count)
        return _Cost(matrix, entry.count, _snapshot(perm), entry.fixed)

    def _catch_up(self, group: str, entry: _Cost, perm: Permutation) -> bool:
        """Apply the moves of `group`'s neighbours since `entry` was summed; False to rebuild."""
        for neighbour in sorted({o[1] for t in self._terms[group] for o in t.others}):
            moved = torch.nonzero(entry.under[neighbour] != perm[neighbour]).flatten()
            if moved.numel() == 0:
                continue
            terms = [t for t in self._terms[group] if any(o[1] == neighbour for o in t.others)]
            twice = any(sum(o[1] == neighbour for o in t.others) > 1 for t in terms)
            if twice or 2 * moved.numel() > perm[neighbour].numel():
                return False
            for term in terms:
                self._add_moved_products(entry, term, neighbour, moved, perm[neighbour])
            entry.under[neighbour] = perm[neighbour].clone()
        return True

    def _add_products(self, sums: tuple[torch.Tensor, ...], term: _Term, perm: Permutation, start: int,
                      stop: int) -> None:
        """Add to each matrix of `sums` the term's unit products over pairs [start, stop),
        other axes under `perm`."""
        target, source = self.pairs.pair_stacks(term.param)
        size = self._size(term)
        for block in _blocks(target, start, stop, keep=(term.dim,)):
            _add_unit_products(sums, _piece(target, block), _piece(source, block, term.others, perm),
                               term.dim + 1, size, term.tile)

    def _add_moved_products(self, entry: _Cost, term: _Term, neighbour: str, moved: torch.Tensor,
                            new: torch.Tensor) -> None:
        """Add to entry.matrix the change of the term when `neighbour` goes from entry.under
        to `new` on units `moved`."""
        target, source = self.pairs.pair_stacks(term.param)
        axis, _, repeat, tile = next(o for o in term.others if o[1] == neighbour)
        rest = tuple(o for o in term.others if o[1] != neighbour)
        units = new.numel()
        rows, before, after = (_positions(index, units, repeat, tile).to(target.device)
                               for index in (moved, entry.under[neighbour][moved], new[moved]))
        size = self._size(term)
        for block in _blocks(target, 0, entry.count, keep=(term.dim, axis)):
            piece = _piece(source, block, rest, entry.under)
            change = _compute(select_along(piece, axis + 1, after)).sub_(select_along(piece, axis + 1, before))
            _add_unit_products((entry.matrix,), select_along(_piece(target, block), axis + 1, rows),
                               change, term.dim + 1, size, term.tile)

    def _size(self, term: _Term) -> int:
        return self.spec.group(self.spec.param_groups[term.param][term.dim]).size

    def _device(self) -> torch.device:
        return self.pairs.pair_stacks(self.pairs.names[0])[0].device


def _terms(spec: PermutationSpec, group: str, names: tuple[str, ...]) -> list[_Term]:
    return [_Term(a.param, a.dim, a.tile, _permuted_axes(spec, a.param, skip=a.dim))
            for a in spec.group(group).axes if a.param in names]


def _sums(matrix: torch.Tensor, fixed: torch.Tensor | None, term: _Term) -> tuple[torch.Tensor, ...]:
    """The matrices a term's products go into: the cost matrix, and the permutation-free part
    too when it is kept apart and the term is one of its terms."""
    return (matrix, fixed) if fixed is not None and not term.others else (matrix,)


def _worth_keeping_fixed(size: int, terms: list[_Term], pairs: Pairs) -> bool:
    """Whether a group's permutation-free terms are kept in a matrix of their own: when they
    hold at least size² elements per pair, recomputing them on a rebuild costs more per pair
    than the extra size x size matrix holds."""
    elements = sum(pairs.pair_stacks(t.param)[0].shape[1:].numel() for t in terms if not t.others)
    return elements >= size * size


def _permuted_axes(spec: PermutationSpec, name: str, skip: int | None) -> tuple[Layout, ...]:
    return tuple((dim, group, spec.repeat(name, dim), spec.tile(name, dim))
                 for dim, group in enumerate(spec.param_groups.get(name, ()))
                 if group is not None and dim != skip)


@dataclass(frozen=True)
class _Block:
    """A piece of a pair stack: pairs `pairs`, and of a pair too large for one piece only
    the range `span` of its parameter axis `axis` (after the permutation of that axis)."""

    pairs: slice
    axis: int | None = None
    span: tuple[int, int] = (0, 0)  # [lo, hi) on `axis`


def _blocks(stack: torch.Tensor, start: int, stop: int, keep: tuple[int, ...]) -> Iterator[_Block]:
    """Pieces of pairs [start, stop) of `stack` of about `_CHUNK_ELEMENTS` elements: runs of
    whole pairs, or, when one pair is larger (an embedding), ranges of its longest
    parameter axis not in `keep` (the axes a product needs whole)."""
    shape = stack.shape[1:]
    per_pair = max(1, shape.numel())
    free = [d for d in range(len(shape)) if d not in keep]
    if per_pair <= _CHUNK_ELEMENTS or not free:
        step = max(1, _CHUNK_ELEMENTS // per_pair)
        for lo in range(start, stop, step):
            yield _Block(slice(lo, min(lo + step, stop)))
        return
    axis = max(free, key=lambda d: shape[d])
    width = max(1, _CHUNK_ELEMENTS * shape[axis] // per_pair)
    for pair in range(start, stop):
        for lo in range(0, shape[axis], width):
            yield _Block(slice(pair, pair + 1), axis, (lo, min(lo + width, shape[axis])))


def _piece(stack: torch.Tensor, block: _Block, axes: tuple[Layout, ...] = (),
           perm: Permutation | None = None) -> torch.Tensor:
    """`block` of `stack` with the axes `axes` permuted by `perm` (a cut permuted axis
    gathers the block's range of its permutation)."""
    piece = stack[block.pairs]  # [pairs, *shape]: parameter axis d is stack axis d + 1
    lo, hi = block.span
    if block.axis is not None and block.axis not in {dim for dim, *_ in axes}:
        piece = piece.narrow(block.axis + 1, lo, hi - lo)
    for dim, group, repeat, tile in axes:
        index = expand_index(perm[group].to(piece.device), repeat, tile)
        piece = select_along(piece, dim + 1, index[lo:hi] if dim == block.axis else index)
    return piece


def _positions(index: torch.Tensor, units: int, repeat: int, tile: int) -> torch.Tensor:
    """Axis positions of the units `index` (a subset of a group of `units`), tiled and repeated."""
    inner = expand_index(index, repeat)
    if tile == 1:
        return inner
    return (torch.arange(tile)[:, None] * (units * repeat) + inner).reshape(-1)


def _add_unit_products(sums: tuple[torch.Tensor, ...], target: torch.Tensor, source: torch.Tensor,
                       dim: int, units: int, tile: int) -> None:
    """Add to each matrix of `sums` ([units, units] float64) Σ over every index but unit i / j
    of axis `dim` of target[.., i, ..] * source[.., j, ..].

    One float32 matrix product over all pairs of the chunk (error: `product_error_bound`),
    added to the float64 matrix. A tiled axis (fused q/k/v) is split into (tile, units *
    repeat) and its copies add up like a batch; a flattened axis holds each unit's block of
    features.
    """
    product = torch.mm(_unit_rows(target, dim, units, tile), _unit_rows(source, dim, units, tile).T)
    for matrix in sums:
        matrix += product


def _unit_rows(stack: torch.Tensor, dim: int, units: int, tile: int) -> torch.Tensor:
    moved = stack.unflatten(dim, (tile, -1)).movedim(dim + 1, 0)  # [units * repeat, ...]
    return _compute(moved).reshape(units, -1)


def _compute(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in the products' float32 (a view when it already is)."""
    return tensor if tensor.dtype == torch.float32 else tensor.to(torch.float32)


def product_error_bound(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Entrywise bound on the float32 rounding error of target @ source.T (rows [n, k]):
    γ_k · |target| @ |source|.T, γ_k = k·u / (1 − k·u), u = 2⁻²⁴, computed in float64."""
    k = target.shape[1]
    unit = 2.0**-24
    gamma = k * unit / (1 - k * unit)
    return gamma * (target.double().abs() @ source.double().abs().T)


def _snapshot(perm: Permutation) -> Permutation:
    return {g: p.clone() for g, p in perm.items()}


def _same(a: Permutation, b: Permutation) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[g], b[g]) for g in a)
