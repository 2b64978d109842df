"""One handler per op: what an op says about which tensor axes share a permutation.

A handler takes a `Call` (arguments as TensorRefs, the result's TensorRef) and returns
`Links`; it never touches the union-find. Every axis an op is not equivariant along
(spatial axes of a convolution, a sliced axis, the inner axes of a flatten) is fixed,
so a missing link can only cost permutations, never correctness. The tables at the end
map functions, Tensor method names and module classes (exact class, not subclasses:
a subclass may change `forward`) to handlers; anything else is refused by the tracer.
"""

import math
import operator
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from trajx.engine.axis_links import Call, Links, TensorRef
from trajx.errors import UnsupportedModel

Handler = Callable[[Call], Links]


def _normalize_dims(dim: object, ndim: int) -> list[int]:
    if dim is None or isinstance(dim, bool):  # torch.std(x, True): `unbiased`, not a dim
        return list(range(ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return sorted(d % ndim for d in dims) if dims else list(range(ndim))


def _refuse(why: str) -> UnsupportedModel:
    """The error a handler raises for a form of its op it cannot describe; the tracer
    re-raises it naming op and node."""
    return UnsupportedModel(why, code="unsupported_op", reason=why)


# -- shape-preserving and broadcasting ops ---------------------------------------------

def metadata(call: Call) -> Links:
    """x.size(), x.dim(), x.shape: a non-tensor result, no axes involved."""
    if call.out is not None:
        raise _refuse("a method returning a tensor is not supported")
    return Links()


def attribute(call: Call) -> Links:
    """getattr(x, name): metadata (shape, dtype, ...), `.real`/`.data` (element-wise), `.T`/`.mT`."""
    name = call.args[1]
    if call.out is None:
        return Links()
    if name in ("real", "data"):
        return elementwise(call)
    if name in ("T", "mT"):
        x: TensorRef = call.args[0]
        order = list(range(x.ndim))[::-1] if name == "T" else [*range(x.ndim - 2), x.ndim - 1, x.ndim - 2]
        return _permuted(call, order)
    raise _refuse(f"tensor attribute {name!r} is not supported")


def elementwise(call: Call) -> Links:
    """Element-wise ops (activations, arithmetic, dropout, softmax along any axis):
    every tensor argument is joined to the result axis by axis, right-aligned, where
    it is not broadcast. Softmax belongs here: softmax(P x) = P softmax(x)."""
    links = Links()
    for tensor in call.tensors():
        links.join_all(tensor, call.out)
    return links


def first_only(call: Call) -> Links:
    """expand / expand_as / type_as: the result is arg 0 broadcast; others give only a shape."""
    return Links().join_all(call.args[0], call.out)


def reduction(call: Call) -> Links:
    """mean/sum/var/std/amax over `dim`: kept axes joined; reduced axes are free
    (the result does not depend on their order)."""
    x: TensorRef = call.args[0]
    reduced = set(_normalize_dims(call.arg(1, "dim"), x.ndim))
    keepdim = call.out.ndim == x.ndim
    links = Links()
    out_dim = 0
    for dim in range(x.ndim):
        if dim not in reduced:
            links.join(x.axis(dim), call.out.axis(out_dim))
        elif keepdim:
            links.fix(call.out.axis(out_dim))
        else:
            continue
        out_dim += 1
    return links


# -- layout ops ------------------------------------------------------------------------

def _chunks(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Pair runs of non-unit source and destination axes whose sizes multiply equal."""
    a = [d for d, n in enumerate(src) if n != 1]
    b = [d for d, n in enumerate(dst) if n != 1]
    chunks, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        run_a, run_b = [a[i]], [b[j]]
        size_a, size_b = src[a[i]], dst[b[j]]
        i, j = i + 1, j + 1
        while size_a != size_b:
            if size_a < size_b:
                run_a.append(a[i])
                size_a *= src[a[i]]
                i += 1
            else:
                run_b.append(b[j])
                size_b *= dst[b[j]]
                j += 1
        chunks.append((run_a, run_b))
    return chunks


def reshape(call: Call) -> Links:
    """view/reshape/flatten/unflatten/squeeze/unsqueeze, read off the two shapes.

    An axis kept whole is joined. Merging axes (c, h, w) -> c*h*w makes the result axis
    the first one repeated h*w times blockwise and fixes h and w; splitting is the
    mirror image. Anything else (a many-to-many regrouping) is fixed.
    """
    x: TensorRef = call.args[0]
    out = call.out
    links = Links().fix(*(x.axis(d) for d, n in enumerate(x.shape) if n == 1))
    links.fix(*(out.axis(d) for d, n in enumerate(out.shape) if n == 1))
    for src, dst in _chunks(x.shape, out.shape):
        if len(src) == 1 and len(dst) == 1:
            links.join(x.axis(src[0]), out.axis(dst[0]))
        elif len(dst) == 1:  # merge: out = x[src[0]] repeated over the inner axes
            links.join_block(out.axis(dst[0]), x.axis(src[0]), math.prod(x.shape[d] for d in src[1:]))
            links.fix(*(x.axis(d) for d in src[1:]))
        elif len(src) == 1:  # split: x = out[dst[0]] repeated over the inner axes
            links.join_block(x.axis(src[0]), out.axis(dst[0]), math.prod(out.shape[d] for d in dst[1:]))
            links.fix(*(out.axis(d) for d in dst[1:]))
        else:
            links.fix(*(x.axis(d) for d in src), *(out.axis(d) for d in dst))
    return links


def _permuted(call: Call, order: list[int]) -> Links:
    x: TensorRef = call.args[0]
    links = Links()
    for out_dim, in_dim in enumerate(order):
        links.join(x.axis(in_dim), call.out.axis(out_dim))
    return links


def transpose(call: Call) -> Links:
    """transpose(d0, d1) / t(): result axis i is input axis order[i]."""
    x: TensorRef = call.args[0]
    order = list(range(x.ndim))
    if x.ndim >= 2:
        d0 = call.arg(1, "dim0", 0) % x.ndim
        d1 = call.arg(2, "dim1", 1) % x.ndim
        order[d0], order[d1] = order[d1], order[d0]
    return _permuted(call, order)


def permute(call: Call) -> Links:
    """permute(*dims) / torch.permute(x, dims)."""
    dims = call.args[1:] if len(call.args) > 1 else (call.kwargs.get("dims"),)
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = dims[0]
    return _permuted(call, [d % call.args[0].ndim for d in dims])


def cat(call: Call) -> Links:
    """cat along `dim`: the concatenated axis is fixed everywhere, the others joined."""
    parts: list[TensorRef] = list(call.arg(0, "tensors"))
    dim = call.arg(1, "dim", 0) % call.out.ndim
    links = Links().fix(call.out.axis(dim))
    for part in parts:
        links.fix(part.axis(dim))
        for d in range(call.out.ndim):
            if d != dim:
                links.join(part.axis(d), call.out.axis(d))
    return links


def getitem(call: Call) -> Links:
    """x[index] with ints, slices, None and Ellipsis. A full slice keeps an axis joined;
    an int or a partial slice fixes it. Tensor (advanced) indices fix every axis."""
    x = call.args[0]
    if not isinstance(x, TensorRef):  # a shape, a list, or the parts of a split
        part = x[call.args[1]]
        if isinstance(part, TensorRef) and call.out is not None:
            return Links().join_all(part, call.out)
        if call.out is not None:
            raise _refuse("indexing several tensors at once is not supported")
        return Links()
    index = call.args[1] if isinstance(call.args[1], tuple) else (call.args[1],)
    basic = (i is None or i is Ellipsis or isinstance(i, slice) or type(i) is int for i in index)
    if not all(basic):  # tensors, lists, bools: advanced indexing
        return Links().fix_all(*call.tensors(), call.out)
    consumed = sum(1 for i in index if i is not None and i is not Ellipsis)
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (x.ndim - consumed) + index[at + 1:]
    index = index + (slice(None),) * (x.ndim - consumed)
    links, in_dim, out_dim = Links(), 0, 0
    for item in index:
        if item is None:
            out_dim += 1
        elif isinstance(item, int):
            links.fix(x.axis(in_dim))
            in_dim += 1
        else:
            if item.indices(x.shape[in_dim]) == (0, x.shape[in_dim], 1):
                links.join(x.axis(in_dim), call.out.axis(out_dim))
            else:
                links.fix(x.axis(in_dim), call.out.axis(out_dim))
            in_dim, out_dim = in_dim + 1, out_dim + 1
    return links


def stack(call: Call) -> Links:
    """stack along a new `dim`: that axis is fixed, the others joined across the parts."""
    parts: list[TensorRef] = list(call.arg(0, "tensors"))
    dim = call.arg(1, "dim", 0) % call.out.ndim
    links = Links().fix(call.out.axis(dim))
    for part in parts:
        for d in range(part.ndim):
            links.join(part.axis(d), call.out.axis(d if d < dim else d + 1))
    return links


def _split_along(call: Call, dim: int, keeps_dim: bool) -> Links:
    """The parts of `x` cut along `dim`: other axes joined, the cut axis fixed (a unit
    of one part is not a unit of the whole)."""
    x: TensorRef = call.args[0]
    dim %= x.ndim
    links = Links().fix(x.axis(dim))
    for part in call.parts:
        if keeps_dim:
            links.fix(part.axis(dim))
        for d in range(x.ndim):
            if d != dim:
                links.join(x.axis(d), part.axis(d if keeps_dim or d < dim else d - 1))
    return links


def split(call: Call) -> Links:
    """split(size_or_sizes, dim) / chunk(chunks, dim)."""
    return _split_along(call, call.arg(2, "dim", 0), keeps_dim=True)


def unbind(call: Call) -> Links:
    """unbind(dim): the parts lose the axis."""
    return _split_along(call, call.arg(1, "dim", 0), keeps_dim=False)


def matmul(call: Call) -> Links:
    """a @ b: a's last axis joined with b's contracted axis, rows and columns with the
    result's, batch axes broadcast."""
    a: TensorRef = call.args[0]
    b: TensorRef = call.args[1]
    out = call.out
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


def scaled_dot_product_attention(call: Call) -> Links:
    """softmax(q k^T) v over (..., L, E) queries and (..., S, E) keys / (..., S, Ev) values:
    q's and k's features joined, k's and v's positions joined; a mask or causal attention
    ties positions to their order, so it fixes them."""
    q, k, v = call.args[0], call.arg(1, "key"), call.arg(2, "value")
    out = call.out
    if call.arg(7, "enable_gqa", False):
        raise _refuse("grouped-query attention is not supported")
    links = Links().join(q.axis(-1), k.axis(-1)).join(k.axis(-2), v.axis(-2))
    links.join(q.axis(-2), out.axis(-2)).join(v.axis(-1), out.axis(-1))
    for side in (q, k, v):
        for offset in range(3, min(side.ndim, out.ndim) + 1):
            if side.shape[-offset] == out.shape[-offset]:
                links.join(side.axis(-offset), out.axis(-offset))
    mask = call.arg(3, "attn_mask")
    if isinstance(mask, TensorRef) or call.arg(5, "is_causal", False):
        links.fix(q.axis(-2), k.axis(-2), out.axis(-2))
        if isinstance(mask, TensorRef):
            links.fix_all(mask)
    return links


# -- layers (module and functional forms share one rule each) -------------------------

def _linear(x: TensorRef, weight: TensorRef, bias: TensorRef | None, out: TensorRef) -> Links:
    links = Links().join(weight.axis(1), x.axis(-1)).join(weight.axis(0), out.axis(-1))
    if bias is not None:
        links.join(bias.axis(0), out.axis(-1))
    for offset in range(2, x.ndim + 1):
        links.join(x.axis(-offset), out.axis(-offset))
    return links


def _conv(call: Call, x: TensorRef, weight: TensorRef, bias: TensorRef | None, groups: int) -> Links:
    out = call.out
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
    raise _refuse(f"grouped convolution with groups={groups} is not supported")


def _norm(x: TensorRef, out: TensorRef, vectors: list[TensorRef | None], dims: list[int]) -> Links:
    """A normalization: result joined to x; each per-feature vector's axis i on x axis dims[i]."""
    links = Links().join_all(x, out)
    for vector in vectors:
        if vector is not None:
            for i, dim in enumerate(dims):
                links.join(vector.axis(i), x.axis(dim))
    return links


def _maybe_param(call: Call, name: str) -> TensorRef | None:
    value = getattr(call.module, name, None)
    return None if value is None else call.param(name, tuple(value.shape))


def linear_module(call: Call) -> Links:
    return _linear(call.args[0], _maybe_param(call, "weight"), _maybe_param(call, "bias"), call.out)


def linear_function(call: Call) -> Links:
    return _linear(call.args[0], call.arg(1, "weight"), call.arg(2, "bias"), call.out)


def conv_module(call: Call) -> Links:
    return _conv(call, call.args[0], _maybe_param(call, "weight"), _maybe_param(call, "bias"),
                 call.module.groups)


def conv_function(call: Call) -> Links:
    return _conv(call, call.args[0], call.arg(1, "weight"), call.arg(2, "bias"), call.arg(6, "groups", 1))


def batch_norm_module(call: Call) -> Links:
    vectors = [_maybe_param(call, n) for n in ("weight", "bias", "running_mean", "running_var")]
    return _norm(call.args[0], call.out, vectors, [1])


def batch_norm_function(call: Call) -> Links:
    vectors = [call.arg(1, "running_mean"), call.arg(2, "running_var"),
               call.arg(3, "weight"), call.arg(4, "bias")]
    return _norm(call.args[0], call.out, [v for v in vectors if isinstance(v, TensorRef)], [1])


def _layer_norm(call: Call, weight: TensorRef | None, bias: TensorRef | None, dims: int) -> Links:
    x: TensorRef = call.args[0]
    return _norm(x, call.out, [weight, bias], list(range(x.ndim - dims, x.ndim)))


def layer_norm_module(call: Call) -> Links:
    dims = len(call.module.normalized_shape)
    return _layer_norm(call, _maybe_param(call, "weight"), _maybe_param(call, "bias"), dims)


def layer_norm_function(call: Call) -> Links:
    return _layer_norm(call, call.arg(2, "weight"), call.arg(3, "bias"), len(call.arg(1, "normalized_shape")))


def _group_norm(call: Call, groups: int, weight: TensorRef | None, bias: TensorRef | None) -> Links:
    x: TensorRef = call.args[0]
    if groups in (1, x.shape[1]):  # statistics over all channels or per channel: equivariant
        return _norm(x, call.out, [weight, bias], [1])
    # channels are normalized in contiguous groups: moving one across groups changes results
    return _norm(x, call.out, [weight, bias], [1]).fix(x.axis(1))


def group_norm_module(call: Call) -> Links:
    return _group_norm(call, call.module.num_groups, _maybe_param(call, "weight"), _maybe_param(call, "bias"))


def group_norm_function(call: Call) -> Links:
    return _group_norm(call, call.arg(1, "num_groups"), call.arg(2, "weight"), call.arg(3, "bias"))


def _embedding(indices: TensorRef, weight: TensorRef, out: TensorRef) -> Links:
    links = Links().fix(weight.axis(0)).join(weight.axis(1), out.axis(-1))
    for dim in range(indices.ndim):
        links.join(indices.axis(dim), out.axis(dim))
    return links


def embedding_module(call: Call) -> Links:
    return _embedding(call.args[0], _maybe_param(call, "weight"), call.out)


def embedding_function(call: Call) -> Links:
    return _embedding(call.args[0], call.arg(1, "weight"), call.out)


def _pooling(spatial: int) -> Handler:
    def pool(call: Call) -> Links:
        """Channel-wise pooling: leading (batch, channel) axes joined, spatial axes fixed."""
        x: TensorRef = call.args[0]
        keep = x.ndim - spatial
        links = Links().fix(*(x.axis(d) for d in range(keep, x.ndim)))
        links.fix(*(call.out.axis(d) for d in range(keep, call.out.ndim)))
        for dim in range(keep):
            links.join(x.axis(dim), call.out.axis(dim))
        return links

    pool.__name__ = f"pool{spatial}d"
    return pool


pool1d, pool2d = _pooling(1), _pooling(2)


def resample(call: Call) -> Links:
    """interpolate / Upsample on (N, C, *spatial): channel-wise like pooling."""
    return _pooling(call.args[0].ndim - 2)(call)

# -- tables ----------------------------------------------------------------------------

# Ops whose result is a tuple of tensors, handed to their handler as `Call.parts`.
SPLITTING = {split, unbind}

_UNARY_FUNCTIONS = [
    torch.relu, torch.tanh, torch.sigmoid, torch.exp, torch.abs, torch.neg, torch.sqrt,
    torch.rsqrt, torch.softmax, torch.log_softmax, torch.clone, F.softmax,
    F.relu, F.gelu, F.silu, F.tanh, F.sigmoid, F.leaky_relu, F.elu, F.softplus, F.mish,
    F.relu6, F.hardtanh, F.log_softmax, F.dropout, F.dropout1d, F.dropout2d, operator.neg,
]
_BINARY_FUNCTIONS = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.pow, operator.iadd,
    operator.isub, operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul,
    torch.div, torch.pow, torch.maximum, torch.minimum, torch.where, torch.masked_fill,
]

FUNCTION_HANDLERS: dict[object, Handler] = {
    **{f: elementwise for f in _UNARY_FUNCTIONS + _BINARY_FUNCTIONS},
    **{f: reduction for f in (torch.mean, torch.sum, torch.var, torch.std, torch.amax, torch.amin)},
    **{f: reshape for f in (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                            torch.unflatten)},
    torch.transpose: transpose, torch.t: transpose, torch.permute: permute,
    torch.cat: cat, torch.concat: cat, torch.concatenate: cat, torch.stack: stack,
    torch.split: split, torch.chunk: split, torch.unbind: unbind,
    operator.getitem: getitem, getattr: attribute,
    operator.matmul: matmul, torch.matmul: matmul, torch.bmm: matmul,
    F.linear: linear_function, F.conv1d: conv_function, F.conv2d: conv_function,
    F.batch_norm: batch_norm_function, F.layer_norm: layer_norm_function,
    F.embedding: embedding_function, F.group_norm: group_norm_function,
    F.scaled_dot_product_attention: scaled_dot_product_attention, F.interpolate: resample,
    **{f: pool1d for f in (F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d)},
    **{f: pool2d for f in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d)},
}

METHOD_HANDLERS: dict[str, Handler] = {
    **{m: elementwise for m in (
        "relu", "tanh", "sigmoid", "exp", "abs", "neg", "sqrt", "rsqrt", "softmax", "log_softmax",
        "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to",
        "add", "sub", "mul", "div", "pow", "add_", "mul_", "masked_fill",
    )},
    **{m: first_only for m in ("expand", "expand_as", "type_as")},
    **{m: reduction for m in ("mean", "sum", "var", "std", "amax", "amin")},
    **{m: reshape for m in ("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze")},
    "transpose": transpose, "t": transpose, "permute": permute,
    "split": split, "chunk": split, "unbind": unbind,
    "matmul": matmul, "bmm": matmul,
    **{m: metadata for m in ("size", "dim", "numel")},
}

MODULE_HANDLERS: dict[type[nn.Module], Handler] = {
    **{m: elementwise for m in (
        nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Softplus,
        nn.Mish, nn.ReLU6, nn.Hardtanh, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
        nn.Softmax, nn.LogSoftmax,
    )},
    **{m: reshape for m in (nn.Flatten, nn.Unflatten)},
    nn.Linear: linear_module,
    nn.Conv1d: conv_module, nn.Conv2d: conv_module,
    nn.BatchNorm1d: batch_norm_module, nn.BatchNorm2d: batch_norm_module,
    nn.LayerNorm: layer_norm_module, nn.GroupNorm: group_norm_module, nn.Upsample: resample,
    nn.Embedding: embedding_module,
    **{m: pool1d for m in (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)},
    **{m: pool2d for m in (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)},
}
