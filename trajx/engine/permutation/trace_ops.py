"""One handler per rule: what an ATen op says about which tensor axes share a permutation.

A handler takes a `Call` (arguments by schema name, tensors as TensorRefs; the result's
TensorRef) and returns `Links`; it never touches the union-find. Every axis an op is not
equivariant along (spatial axes of a convolution, a sliced axis, attention positions
under a mask) is fixed, so a missing link can only cost permutations, never correctness.
`HANDLERS` maps the rule names of `trajx.op_table.RULES` to handlers.
"""

from collections.abc import Callable, Sequence

from trajx.engine.permutation.axis_links import Call, Endpoint, Links, TensorRef
from trajx.errors import UnsupportedModel

Handler = Callable[[Call], Links]


def _refuse(why: str) -> UnsupportedModel:
    """The error a handler raises for a form of its op it cannot describe; the tracer
    re-raises it naming op and node."""
    return UnsupportedModel(why, code="unsupported_op", reason=why)


def _first(call: Call) -> TensorRef:
    return call.tensors()[0]


def _result(call: Call) -> TensorRef:
    """The main result: the only one, or the first of several (native_layer_norm's output)."""
    return call.out if call.out is not None else call.parts[0]


def _fix_extra_parts(call: Call, links: Links) -> Links:
    """Statistics and indices an op returns besides its result keep every axis in place."""
    return links.fix_all(*(p for p in call.parts[1:] if p is not None))


def _dims(dim: object, ndim: int) -> list[int]:
    if dim is None:
        return list(range(ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return sorted(d % ndim for d in dims) if dims else list(range(ndim))


# -- element-wise, broadcasting and reductions -----------------------------------------

def elementwise(call: Call) -> Links:
    """Every tensor argument joined to the result axis by axis, right-aligned, where it is
    not broadcast."""
    links = Links()
    for tensor in call.tensors():
        links.join_all(tensor, call.out)
    return links


def first_only(call: Call) -> Links:
    """expand / expand_as / type_as: the result is the first argument broadcast; the others
    give only a shape or dtype. An axis broadcast from size 1 holds equal copies: free."""
    return Links().join_all(_first(call), call.out)


def reduction(call: Call) -> Links:
    """Kept axes joined; reduced axes are free (the result does not depend on their order)."""
    x = _first(call)
    reduced = set(_dims(call.arg("dim"), x.ndim))
    keepdim = call.out.ndim == x.ndim
    links, out_dim = Links(), 0
    for dim in range(x.ndim):
        if dim not in reduced:
            links.join(x.axis(dim), call.out.axis(out_dim))
        elif keepdim:
            links.fix(call.out.axis(out_dim))
        else:
            continue
        out_dim += 1
    return links


def along_dim(call: Call) -> Links:
    """cumsum / cumprod / diff along `dim`: that axis is fixed (the result depends on its
    order), the others joined; `prepend`/`append` tensors join like the input."""
    links = elementwise(call)
    dim = call.arg("dim") % call.out.ndim
    return links.fix(call.out.axis(dim), *(t.axis(dim) for t in call.tensors() if t.ndim == call.out.ndim))


def constant(call: Call) -> Links:
    """ones / zeros / full (and their _like forms): all entries equal, so no axis is tied."""
    return Links()


def fix_all(call: Call) -> Links:
    """arange, masks, advanced indexing: every axis of every argument and result stays."""
    return Links().fix_all(*call.tensors(), *([call.out] if call.out else []),
                           *(p for p in call.parts if p is not None))


def no_result(call: Call) -> Links:
    return Links()


# -- layout ----------------------------------------------------------------------------

def reshape(call: Call) -> Links:
    """view / reshape / flatten / unflatten / squeeze / unsqueeze: the input's axes read
    row-major hold the same units as the result's. The union-find refines both sides to
    one factorization: merging (C, H, W) gives an axis whose outer factor is C."""
    x, out = _first(call), call.out
    links = Links().fix(*(x.axis(d) for d, n in enumerate(x.shape) if n == 1))
    links.fix(*(out.axis(d) for d, n in enumerate(out.shape) if n == 1))
    return links.join_seq((x.axis(d) for d, n in enumerate(x.shape) if n != 1),
                          (out.axis(d) for d, n in enumerate(out.shape) if n != 1))


def _permuted(x: TensorRef, out: TensorRef, order: list[int]) -> Links:
    links = Links()
    for out_dim, in_dim in enumerate(order):
        links.join(x.axis(in_dim), out.axis(out_dim))
    return links


def transpose(call: Call) -> Links:
    x = _first(call)
    order = list(range(x.ndim))
    if x.ndim >= 2:
        d0, d1 = call.arg("dim0", 0) % x.ndim, call.arg("dim1", 1) % x.ndim
        order[d0], order[d1] = order[d1], order[d0]
    return _permuted(x, call.out, order)


def permute(call: Call) -> Links:
    x = _first(call)
    return _permuted(x, call.out, [d % x.ndim for d in call.arg("dims")])


def reverse_axes(call: Call) -> Links:
    """numpy_T (`x.T`): every axis in reverse order."""
    x = _first(call)
    return _permuted(x, call.out, list(reversed(range(x.ndim))))


def repeat(call: Call) -> Links:
    """x.repeat(r0, r1, ...): axis d of the result is r_d copies of x's axis one after another
    (a tiled layout; the copy index keeps its order); leading new axes are fixed."""
    x, out, repeats = _first(call), call.out, list(call.arg("repeats"))
    new = len(repeats) - x.ndim
    links = Links().fix(*(out.axis(d) for d in range(new)))
    for d in range(x.ndim):
        if repeats[new + d] == 1:
            links.join(x.axis(d), out.axis(new + d))
        else:
            copies = links.add_virtual(f"{out.key}#copies{d}", repeats[new + d])
            links.fix(copies).join_seq((out.axis(new + d),), (copies, x.axis(d)))
    return links


def repeat_interleave(call: Call) -> Links:
    """repeat_interleave(x, r, dim): each unit of axis `dim` repeated r times in place (a
    repeated layout); without `dim` the flattened tensor is refused."""
    x, out, dim = _first(call), call.out, call.arg("dim")
    if dim is None:
        raise _refuse("repeat_interleave without dim flattens its input")
    dim %= x.ndim
    links = Links()
    for d in range(x.ndim):
        if d != dim:
            links.join(x.axis(d), out.axis(d))
    copies = links.add_virtual(f"{out.key}#copies", call.arg("repeats"))
    return links.fix(copies).join_seq((out.axis(dim),), (x.axis(dim), copies))


def pad(call: Call) -> Links:
    """pad / constant_pad_nd / reflection and replication pads: a padded axis is fixed (its
    border depends on the order), the others (channels, batch) joined."""
    x, out = _first(call), call.out
    widths = list(call.arg("pad", call.arg("padding")))
    padded = {x.ndim - 1 - i // 2 for i, w in enumerate(widths) if w}
    links = Links()
    for d in range(x.ndim):
        if d in padded:
            links.fix(x.axis(d), out.axis(d))
        else:
            links.join(x.axis(d), out.axis(d))
    return links


def cat(call: Call) -> Links:
    """cat along `dim`: the concatenated axis is fixed everywhere, the others joined."""
    dim = call.arg("dim", 0) % call.out.ndim
    links = Links().fix(call.out.axis(dim))
    for part in call.arg("tensors"):
        if part.ndim != call.out.ndim:  # a legacy empty (0,) tensor
            links.fix_all(part)
            continue
        links.fix(part.axis(dim))
        for d in range(call.out.ndim):
            if d != dim:
                links.join(part.axis(d), call.out.axis(d))
    return links


def stack(call: Call) -> Links:
    """stack along a new `dim`: that axis is fixed, the others joined across the parts."""
    dim = call.arg("dim", 0) % call.out.ndim
    links = Links().fix(call.out.axis(dim))
    for part in call.arg("tensors"):
        for d in range(part.ndim):
            links.join(part.axis(d), call.out.axis(d if d < dim else d + 1))
    return links


def split(call: Call) -> Links:
    """split / split_with_sizes / chunk along `dim`. Equal parts: the cut axis is
    (parts, part size), the number of parts fixed and every part's axis the inner factor,
    so units move alike in each part (a fused q/k/v projection's heads). Unequal parts:
    the cut axis is fixed."""
    x = _first(call)
    dim = call.arg("dim", 0) % x.ndim
    parts = [p for p in call.parts if p is not None]
    links = Links()
    for part in parts:
        for d in range(x.ndim):
            if d != dim:
                links.join(x.axis(d), part.axis(d))
    sizes = {part.shape[dim] for part in call.parts}
    if len(sizes) == 1 and len(call.parts) * sizes.pop() == x.shape[dim]:
        count = links.add_virtual(f"{x.key}#parts{dim}", len(call.parts))
        for part in parts:
            links.join_seq((x.axis(dim),), (count, part.axis(dim)))
        return links.fix(count)
    return links.fix(x.axis(dim), *(part.axis(dim) for part in parts))


def unbind(call: Call) -> Links:
    """unbind(dim): the parts lose the (fixed) axis; the others are joined."""
    x = _first(call)
    dim = call.arg("dim", 0) % x.ndim
    links = Links().fix(x.axis(dim))
    for part in call.parts:
        if part is not None:
            for d in range(x.ndim):
                if d != dim:
                    links.join(x.axis(d), part.axis(d if d < dim else d - 1))
    return links


def select(call: Call) -> Links:
    """x.select(dim, i): one entry of a fixed axis; the others are joined."""
    x = _first(call)
    dim = call.arg("dim") % x.ndim
    links = Links().fix(x.axis(dim))
    for d in range(x.ndim):
        if d != dim:
            links.join(x.axis(d), call.out.axis(d if d < dim else d - 1))
    return links


def slice_(call: Call) -> Links:
    """x[.., start:end:step, ..]: a full slice keeps the axis joined, any other fixes it."""
    x = _first(call)
    dim = call.arg("dim", 0) % x.ndim
    links = Links()
    for d in range(x.ndim):
        if d != dim or call.out.shape[d] == x.shape[d] and call.arg("step", 1) == 1:
            links.join(x.axis(d), call.out.axis(d))
        else:
            links.fix(x.axis(d), call.out.axis(d))
    return links


def getitem(call: Call) -> Links:
    """One result of an op that returns several (`parts[i]`)."""
    part = call.args["self"][call.args["index"]]
    if call.out is None:
        return Links()
    if not isinstance(part, TensorRef):
        raise _refuse("it picks a result that is not a tensor")
    return Links().join_all(part, call.out)


# -- products and layers ---------------------------------------------------------------

def _matmul(a: TensorRef, b: TensorRef, out: TensorRef) -> Links:
    """a @ b: a's last axis joined with b's contracted axis, rows and columns with the
    result's, batch axes broadcast."""
    links = Links().join(a.axis(-1), b.axis(0 if b.ndim == 1 else -2))
    if a.ndim >= 2:
        links.join(a.axis(-2), out.axis(-2 if b.ndim >= 2 else -1))
    if b.ndim >= 2:
        links.join(b.axis(-1), out.axis(-1))
    batch_out = out.ndim - (a.ndim >= 2) - (b.ndim >= 2)
    for side in (a, b):
        batch = side.ndim - 2
        for offset in range(1, min(batch, batch_out) + 1):
            if side.shape[batch - offset] == out.shape[batch_out - offset]:
                links.join(side.axis(batch - offset), out.axis(batch_out - offset))
    return links


def matmul(call: Call) -> Links:
    a, b = call.tensors()[:2]
    return _matmul(a, b, call.out)


def addmm(call: Call) -> Links:
    """bias + mat1 @ mat2 (addmm), or batched: self + batch1 @ batch2 (baddbmm)."""
    a, b = call.arg("mat1", call.arg("batch1")), call.arg("mat2", call.arg("batch2"))
    return _matmul(a, b, call.out).join_all(call.arg("self"), call.out)


def linear(call: Call) -> Links:
    x, weight, bias, out = call.arg("input"), call.arg("weight"), call.arg("bias"), call.out
    links = Links().join(weight.axis(-1), x.axis(-1))
    if weight.ndim == 2:
        links.join(weight.axis(0), out.axis(-1))
    if bias is not None:
        links.join_all(bias, out)
    for offset in range(2 if weight.ndim == 2 else 1, x.ndim + 1):
        links.join(x.axis(-offset), out.axis(-offset))
    return links


def conv(call: Call) -> Links:
    """conv1d / conv2d / convolution: channels joined, spatial axes fixed; depthwise
    convolutions tie each filter to its channel; grouped ones keep the groups in order and
    permute the channels inside every group alike."""
    if call.arg("transposed", False):
        raise _refuse("transposed convolution is not supported")
    x, weight, bias, out = call.arg("input"), call.arg("weight"), call.arg("bias"), call.out
    groups = call.arg("groups", 1)
    channel = 1 if x.ndim == weight.ndim else 0  # batched (N, C, ...) or unbatched (C, ...)
    links = Links().fix(*(weight.axis(d) for d in range(2, weight.ndim)))
    links.fix(*(x.axis(d) for d in range(channel + 1, x.ndim)))
    links.fix(*(out.axis(d) for d in range(channel + 1, out.ndim)))
    if channel:
        links.join(x.axis(0), out.axis(0))
    if bias is not None:
        links.join(bias.axis(0), out.axis(channel))
    links.join(weight.axis(0), out.axis(channel))
    if groups == 1:
        return links.join(weight.axis(1), x.axis(channel))
    if groups == x.shape[channel] == out.shape[channel]:  # depthwise: one filter per channel
        return links.join(weight.axis(0), x.axis(channel)).fix(weight.axis(1))
    # groups of channels, in order (fixed): units move alike inside every group
    block = links.add_virtual(f"{out.key}#groups", groups)
    filters = links.add_virtual(f"{out.key}#filters", weight.shape[0] // groups)
    links.fix(block).join_seq((out.axis(channel),), (block, filters))
    links.join_seq((weight.axis(0),), (block, filters))
    return links.join_seq((x.axis(channel),), (block, weight.axis(1)))


def _norm(x: TensorRef, out: TensorRef, vectors: list[TensorRef | None], dims: list[int]) -> Links:
    """A normalization: result joined to x; each per-feature vector's axis i on x axis dims[i]."""
    links = Links().join_all(x, out)
    for vector in vectors:
        if vector is not None:
            for i, dim in enumerate(dims):
                links.join(vector.axis(i), x.axis(dim))
    return links


def batch_norm(call: Call) -> Links:
    names = ("weight", "bias", "running_mean", "running_var")
    links = _norm(call.arg("input"), _result(call), [call.arg(n) for n in names], [1])
    return _fix_extra_parts(call, links)


def layer_norm(call: Call) -> Links:
    x = call.arg("input")
    dims = len(call.arg("normalized_shape"))
    links = _norm(x, _result(call), [call.arg("weight"), call.arg("bias")], list(range(x.ndim - dims, x.ndim)))
    return _fix_extra_parts(call, links)


def group_norm(call: Call) -> Links:
    """Channels move only when statistics are over all of them or per channel."""
    x = call.arg("input")
    groups = call.arg("num_groups", call.arg("group"))
    links = _norm(x, _result(call), [call.arg("weight"), call.arg("bias")], [1])
    if groups not in (1, x.shape[1]):  # contiguous channel groups: moving one across changes results
        links.fix(x.axis(1))
    return _fix_extra_parts(call, links)


def prelu(call: Call) -> Links:
    """A learned slope per channel (axis 1) or one shared by all."""
    x, weight = call.arg("self"), call.arg("weight")
    links = Links().join_all(x, call.out)
    if weight.ndim == 1 and weight.shape[0] > 1:
        links.join(weight.axis(0), x.axis(1))
    return links


def embedding(call: Call) -> Links:
    """Rows of the table are looked up by value: the vocabulary axis is fixed."""
    weight, indices, out = call.arg("weight"), call.arg("indices"), call.out
    links = Links().fix(weight.axis(0)).join(weight.axis(1), out.axis(-1))
    for dim in range(indices.ndim):
        links.join(indices.axis(dim), out.axis(dim))
    return links


def attention(call: Call) -> Links:
    """softmax(q k^T) v over (..., L, E) queries, (..., S, E) keys, (..., S, Ev) values.

    q's and k's features are joined, k's and v's positions, the batch and head axes of all
    three with the result's. Grouped-query attention (`enable_gqa`): key/value head h serves
    query heads h*g .. h*g+g-1, so the query head axis is (key heads, g). A mask or causal
    attention ties positions to their order, so it fixes them.
    """
    q, k, v, out = call.arg("query"), call.arg("key"), call.arg("value"), call.out
    links = Links().join(q.axis(-1), k.axis(-1)).join(k.axis(-2), v.axis(-2))
    links.join(q.axis(-2), out.axis(-2)).join(v.axis(-1), out.axis(-1))
    for offset in range(3, out.ndim + 1):
        links.join(q.axis(-offset), out.axis(-offset))
        for side in (k, v):
            if offset > side.ndim:
                continue
            if side.shape[-offset] == out.shape[-offset]:
                links.join(side.axis(-offset), out.axis(-offset))
            elif offset == 3 and call.arg("enable_gqa", False) and side.shape[-3] > 1:
                share = out.shape[-3] // side.shape[-3]
                queries = links.add_virtual(f"{out.key}#gqa", share)
                links.join_seq((out.axis(-3),), (side.axis(-3), queries))
    mask = call.arg("attn_mask")
    if isinstance(mask, TensorRef) or call.arg("is_causal", False):
        links.fix(q.axis(-2), k.axis(-2), out.axis(-2))
        if isinstance(mask, TensorRef):
            links.fix(*(mask.axis(-d) for d in range(1, min(mask.ndim, 2) + 1)))
            for offset in range(3, min(mask.ndim, out.ndim) + 1):  # a per-head mask moves with its head
                if mask.shape[-offset] == out.shape[-offset]:
                    links.join(mask.axis(-offset), out.axis(-offset))
    return links


def outer(call: Call) -> Links:
    """outer(a, b)[i, j] = a[i] b[j]: a's axis is the rows, b's the columns."""
    a, b = call.tensors()[:2]
    return Links().join(a.axis(0), call.out.axis(0)).join(b.axis(0), call.out.axis(1))


def _gated(links: Links, key: str, rows: TensorRef, hidden: Endpoint, gates: int) -> None:
    """A recurrent weight's or bias's rows: `gates` blocks (fixed order) of the hidden units."""
    block = links.add_virtual(f"{key}#gates", gates)
    links.fix(block)
    links.join_seq((rows.axis(0),), (block, hidden))


def _recurrent_weights(links: Links, key: str, hidden: Endpoint, layer_input: list[Endpoint],
                       weights: list[TensorRef | None]) -> None:
    """One layer and direction: w_ih [G*H, in], w_hh [G*H, H], biases [G*H]. The hidden units
    move alike in every gate block, in w_hh's columns and in the next layer's input."""
    w_ih, w_hh, *biases = weights
    size = w_hh.shape[1]
    if w_hh.shape[0] % size or w_ih.shape[0] != w_hh.shape[0]:
        raise _refuse("recurrent weights with a projection (proj_size) are not supported")
    gates = w_hh.shape[0] // size
    for rows in (w_ih, w_hh, *(b for b in biases if b is not None)):
        _gated(links, key, rows, hidden, gates)
    links.join(w_hh.axis(1), hidden)
    links.join_seq((w_ih.axis(1),), tuple(layer_input))


def _state(links: Links, state: TensorRef, hidden: Endpoint, batch: Endpoint | None, stacked: bool) -> None:
    """A hidden or cell state: a layer's [layers*directions, B, H] (or [layers*directions, H]
    unbatched; the stack keeps its order), a cell's [B, H] (or [H])."""
    links.join(state.axis(-1), hidden)
    if stacked:
        links.fix(state.axis(0))
    if state.ndim == 2 + stacked and batch is not None:
        links.join(state.axis(-2), batch)


def _states(links: Links, hx: TensorRef | Sequence[TensorRef | None] | None, outputs: Sequence[TensorRef | None],
            hidden: Endpoint, batch: Endpoint | None, stacked: bool) -> None:
    """The initial states `hx` (one tensor, or h and c) and the state outputs, each through
    `_state`."""
    for state in [*(hx if isinstance(hx, (list, tuple)) else [hx]), *outputs]:
        if state is not None:
            _state(links, state, hidden, batch, stacked=stacked)


def recurrent(call: Call) -> Links:
    """gru / lstm / rnn_tanh / rnn_relu over a sequence (`input` [T, B, I], batch_first
    [B, T, I], or unbatched [T, I]): every layer and direction shares one permutation of
    the hidden units (they meet in the stacked states), each gate block permuted alike;
    time steps and directions keep their order."""
    x = call.arg("input")
    out, *states = call.parts
    params, layers = call.arg("params"), call.arg("num_layers")
    directions = 2 if call.arg("bidirectional") else 1
    per = len(params) // (layers * directions)
    if per not in (2, 4) or per * layers * directions != len(params):
        raise _refuse("recurrent weights with a projection (proj_size) are not supported")
    links = Links()
    hidden = links.add_virtual(f"{out.key}#hidden", params[1].shape[1])
    stacked = [hidden]
    if directions == 2:
        stacked = [links.add_virtual(f"{out.key}#directions", 2), hidden]
        links.fix(stacked[0])
    time = 1 if x.ndim == 3 and call.arg("batch_first") else 0
    links.fix(x.axis(time), out.axis(time))
    batch = x.axis(1 - time) if x.ndim == 3 else None
    if batch is not None:
        links.join(batch, out.axis(1 - time))
    links.join_seq((out.axis(-1),), tuple(stacked))
    for index in range(layers * directions):
        weights = params[index * per:(index + 1) * per]
        _recurrent_weights(links, out.key, hidden, [x.axis(-1)] if index < directions else stacked, weights)
    _states(links, call.arg("hx"), states, hidden, batch, stacked=True)
    return links


def recurrent_cell(call: Call) -> Links:
    """gru_cell / lstm_cell / rnn_tanh_cell / rnn_relu_cell: one step, input [B, I] or [I],
    states [B, H] or [H]; the hidden units move alike in every gate block."""
    x = call.arg("input")
    results = [call.out] if call.out is not None else [p for p in call.parts if p is not None]
    links = Links()
    hidden = links.add_virtual(f"{results[0].key}#hidden", call.arg("w_hh").shape[1])
    _recurrent_weights(links, results[0].key, hidden, [x.axis(-1)],
                       [call.arg("w_ih"), call.arg("w_hh"), call.arg("b_ih"), call.arg("b_hh")])
    batch = x.axis(0) if x.ndim == 2 else None
    _states(links, call.arg("hx"), results, hidden, batch, stacked=False)
    return links


def _pooling(spatial: int) -> Handler:
    def pool(call: Call) -> Links:
        """Channel-wise pooling: leading (batch, channel) axes joined, spatial axes fixed."""
        x, out = _first(call), _result(call)
        keep = x.ndim - spatial
        links = Links().fix(*(x.axis(d) for d in range(keep, x.ndim)))
        links.fix(*(out.axis(d) for d in range(keep, out.ndim)))
        for dim in range(keep):
            links.join(x.axis(dim), out.axis(dim))
        for part in call.parts[1:]:  # indices of the maxima: positions within each channel
            if part is not None:
                links.fix(*(part.axis(d) for d in range(keep, part.ndim)))
                for dim in range(keep):
                    links.join(x.axis(dim), part.axis(dim))
        return links

    pool.__name__ = f"pool{spatial}d"
    return pool


HANDLERS: dict[str, Handler] = {
    "elementwise": elementwise, "along_dim": along_dim, "first_only": first_only, "reduction": reduction,
    "constant": constant, "fix_all": fix_all, "no_result": no_result,
    "reshape": reshape, "transpose": transpose, "permute": permute, "cat": cat, "stack": stack,
    "reverse_axes": reverse_axes, "repeat": repeat, "repeat_interleave": repeat_interleave, "pad": pad,
    "split": split, "unbind": unbind, "select": select, "slice": slice_, "getitem": getitem,
    "matmul": matmul, "addmm": addmm, "linear": linear, "conv": conv,
    "batch_norm": batch_norm, "layer_norm": layer_norm, "group_norm": group_norm, "prelu": prelu,
    "embedding": embedding, "attention": attention, "pool1d": _pooling(1), "pool2d": _pooling(2),
    "outer": outer, "recurrent": recurrent, "recurrent_cell": recurrent_cell,
}

# Rules that read an op's several results from `Call.parts`.
SPLITTING = frozenset({"split", "unbind", "batch_norm", "layer_norm", "group_norm", "pool1d", "pool2d",
                       "fix_all", "recurrent", "recurrent_cell"})
