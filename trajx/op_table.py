"""Which graph operators spec derivation has a rule for, as plain strings (no torch).

Spec derivation (`trajx.engine.permutation.trace`) walks a `torch.export` graph whose nodes call ATen
operators named like `"aten.linear.default"` (packet and overload), plus
`"_operator.getitem"` for picking one result of an op that returns several. `RULES` maps
each operator with a rule to the rule's name (the handler in `trajx.engine.permutation.trace_ops`);
`REFUSED` lists every operator of PyTorch's core ATen set without one, with the reason.
Any other operator is refused too: the table fails closed. The API reads this module to
check an uploaded program's operators before anything runs, without importing torch
(`unsupported(targets)` takes a saved program's node targets as they are written).
"""

_RULE_OPS: dict[str, tuple[str, ...]] = {
    # the result is joined to every tensor argument, axis by axis where not broadcast
    "elementwise": (
        "aten.abs.default", "aten.acos.default", "aten.acosh.default", "aten.asin.default",
        "aten.asinh.default", "aten.atan.default", "aten.atanh.default", "aten.atan2.default",
        "aten.ceil.default", "aten.floor.default", "aten.round.default", "aten.trunc.default",
        "aten.sign.default", "aten.cos.default", "aten.cosh.default", "aten.sin.default",
        "aten.sinh.default", "aten.tan.default", "aten.tanh.default", "aten.erf.default",
        "aten.exp.default", "aten.expm1.default", "aten.log.default", "aten.log10.default",
        "aten.log1p.default", "aten.log2.default", "aten.neg.default", "aten.reciprocal.default",
        "aten.relu.default", "aten.rsqrt.default", "aten.sqrt.default", "aten.square.default",
        "aten.sigmoid.default", "aten.gelu.default", "aten.elu.default", "aten.leaky_relu.default",
        "aten.hardtanh.default", "aten.silu.default", "aten.mish.default", "aten.softplus.default",
        "aten.hardswish.default", "aten.hardsigmoid.default", "aten.relu6.default",
        "aten.clamp.default", "aten.clamp.Tensor", "aten.clamp_min.default", "aten.clamp_max.default",
        "aten.add.Scalar", "aten.add.Tensor", "aten.sub.Scalar", "aten.sub.Tensor", "aten.rsub.Scalar",
        "aten.mul.Scalar", "aten.mul.Tensor", "aten.div.Scalar", "aten.div.Scalar_mode",
        "aten.div.Tensor", "aten.div.Tensor_mode", "aten.pow.Scalar", "aten.pow.Tensor_Scalar",
        "aten.pow.Tensor_Tensor", "aten.fmod.Scalar", "aten.fmod.Tensor", "aten.remainder.Scalar",
        "aten.remainder.Tensor", "aten.maximum.default", "aten.minimum.default", "aten.where.self",
        "aten.eq.Scalar", "aten.eq.Tensor", "aten.ne.Scalar", "aten.ne.Tensor", "aten.lt.Scalar",
        "aten.lt.Tensor", "aten.le.Scalar", "aten.le.Tensor", "aten.gt.Scalar", "aten.gt.Tensor",
        "aten.ge.Scalar", "aten.ge.Tensor", "aten.logical_and.default", "aten.logical_not.default",
        "aten.logical_or.default", "aten.logical_xor.default", "aten.where.ScalarOther",
        "aten.where.ScalarSelf", "aten.where.Scalar", "aten.detach_.default", "aten.max.other",
        "aten.min.other", "aten.dropout_.default", "aten.bitwise_and.Scalar",
        "aten.bitwise_and.Tensor", "aten.bitwise_not.default", "aten.bitwise_or.Scalar",
        "aten.bitwise_or.Tensor", "aten.bitwise_xor.Scalar", "aten.bitwise_xor.Tensor",
        "aten.__and__.Tensor", "aten.__or__.Tensor", "aten.__xor__.Tensor",
        "aten.isinf.default", "aten.isnan.default", "aten.masked_fill.Scalar",
        "aten.masked_fill.Tensor", "aten.masked_fill_.Scalar", "aten.add_.Tensor", "aten.sub_.Tensor",
        "aten.mul_.Tensor", "aten.div_.Tensor", "aten.relu_.default", "aten.gelu_.default",
        "aten.silu_.default", "aten.clone.default", "aten.alias.default", "aten.contiguous.default",
        "aten.detach.default", "aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout",
        "aten.to.device", "aten.copy.default", "aten.fill.Scalar", "aten.dropout.default",
        # softmax(P x) = P softmax(x) along any axis
        "aten._softmax.default", "aten._log_softmax.default", "aten.softmax.int",
        "aten.log_softmax.int",
        # weight normalization: g * v / |v| with the norm over every axis but `dim`
        "aten._weight_norm.default",
    ),
    # running sums and differences along `dim`: that axis keeps its order, the others move
    "along_dim": ("aten.cumsum.default", "aten.cumprod.default", "aten.diff.default"),
    "first_only": ("aten.expand.default", "aten.expand_as.default", "aten.type_as.default"),
    "reduction": (
        "aten.mean.dim", "aten.mean.default", "aten.sum.dim_IntList", "aten.sum.default",
        "aten.var.correction", "aten.var.dim", "aten.std.correction", "aten.std.dim",
        "aten.amax.default", "aten.amin.default", "aten.prod.dim_int", "aten.prod.default",
        "aten.any.default", "aten.any.dim", "aten.any.dims", "aten.logsumexp.default",
        "aten.linalg_vector_norm.default",
    ),
    "reshape": (
        "aten.view.default", "aten.reshape.default", "aten._unsafe_view.default",
        "aten.flatten.using_ints", "aten.unflatten.int", "aten.squeeze.default", "aten.squeeze.dim",
        "aten.squeeze.dims", "aten.unsqueeze.default", "aten.view_as.default", "aten.reshape_as.default",
    ),
    "transpose": ("aten.transpose.int", "aten.t.default"),
    "reverse_axes": ("aten.numpy_T.default",),
    "repeat": ("aten.repeat.default",),
    "repeat_interleave": ("aten.repeat_interleave.self_int",),
    "pad": ("aten.pad.default", "aten.constant_pad_nd.default", "aten.reflection_pad1d.default",
            "aten.reflection_pad2d.default", "aten.reflection_pad3d.default", "aten.replication_pad2d.default",
            "aten.replication_pad3d.default"),
    "permute": ("aten.permute.default",),
    "cat": ("aten.cat.default",),
    "stack": ("aten.stack.default",),
    "split": ("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default"),
    "unbind": ("aten.unbind.int",),
    "select": ("aten.select.int",),
    "slice": ("aten.slice.Tensor",),
    "getitem": ("_operator.getitem",),
    "matmul": ("aten.matmul.default", "aten.bmm.default", "aten.mm.default"),
    "addmm": ("aten.addmm.default", "aten.baddbmm.default"),
    "linear": ("aten.linear.default",),
    "conv": ("aten.conv1d.default", "aten.conv2d.default", "aten.convolution.default",
             "aten.conv1d.padding", "aten.conv2d.padding"),
    "batch_norm": ("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default"),
    "layer_norm": ("aten.layer_norm.default", "aten.native_layer_norm.default", "aten.rms_norm.default"),
    "group_norm": ("aten.group_norm.default", "aten.native_group_norm.default"),
    "prelu": ("aten.prelu.default",),
    "embedding": ("aten.embedding.default",),
    "attention": ("aten.scaled_dot_product_attention.default",),
    "outer": ("aten.outer.default",),
    # recurrent layers and single steps; hidden units move in every gate block (packed
    # sequences, the `.data` forms, are left out: torch.export cannot export them)
    "recurrent": ("aten.gru.input", "aten.lstm.input", "aten.rnn_tanh.input", "aten.rnn_relu.input"),
    "recurrent_cell": ("aten.gru_cell.default", "aten.lstm_cell.default", "aten.rnn_tanh_cell.default",
                       "aten.rnn_relu_cell.default"),
    "pool1d": ("aten.max_pool1d.default", "aten.avg_pool1d.default", "aten.adaptive_avg_pool1d.default",
               "aten.upsample_nearest1d.vec", "aten.upsample_linear1d.vec"),
    "pool2d": ("aten.max_pool2d.default", "aten.avg_pool2d.default", "aten.adaptive_avg_pool2d.default",
               "aten._adaptive_avg_pool2d.default", "aten.max_pool2d_with_indices.default",
               "aten.upsample_nearest2d.vec", "aten.upsample_bilinear2d.vec",
               "aten.upsample_bicubic2d.vec"),
    # a tensor whose entries are all equal: any permutation of it is itself
    "constant": (
        "aten.ones.default", "aten.zeros.default", "aten.full.default", "aten.ones_like.default",
        "aten.zeros_like.default", "aten.full_like.default", "aten.new_ones.default",
        "aten.new_zeros.default", "aten.new_full.default", "aten.scalar_tensor.default",
    ),
    # positions, masks and picked entries: every axis involved keeps its order
    "fix_all": (
        "aten.arange.default", "aten.arange.start", "aten.arange.start_step", "aten.triu.default",
        "aten.tril.default", "aten.lift_fresh_copy.default", "aten.index.Tensor",
        "aten.index_select.default", "aten.gather.default", "aten._local_scalar_dense.default",
        # an in-place copy or fill into a view (shifted token ids): the view's base is
        # linked to it by the view's own rule, so fixing here fixes the base too
        "aten.copy_.default", "aten.fill_.Tensor", "aten.fill_.Scalar",
    ),
    # checks on a tensor's dtype or shape that return nothing
    "no_result": ("aten._assert_tensor_metadata.default",),
}

RULES: dict[str, str] = {op: rule for rule, ops in _RULE_OPS.items() for op in ops}

_ORDER = "its result depends on the order of entries along an axis"
_RANDOM = "random or uninitialized values"
_REFUSED_OPS: dict[str, tuple[str, ...]] = {
    _ORDER: (
        "aten.argmax.default", "aten.argmin.default", "aten.max.dim", "aten.min.dim",
        "aten.sort.default", "aten.topk.default", "aten.flip.default",
        "aten.diagonal.default", "aten.nonzero.default",
        "aten.scatter.src", "aten.scatter.value", "aten.scatter_add.default",
        "aten.scatter_reduce.two", "aten.index_put.default", "aten.masked_scatter.default",
        "aten.select_scatter.default", "aten.slice_scatter.default", "aten.as_strided.default",
        "aten.col2im.default",
        "aten._fft_r2c.default", "aten._fft_c2r.default", "aten._cdist_forward.default",
        "aten._pdist_forward.default", "aten._embedding_bag.default", "aten.grid_sampler_2d.default",
        "aten.avg_pool3d.default", "aten._adaptive_avg_pool3d.default",
        "aten.max_pool3d_with_indices.default",
    ),
    _RANDOM: (
        "aten.rand.default", "aten.randn.default", "aten.randperm.default", "aten.native_dropout.default",
        "aten.empty.memory_format", "aten.empty_strided.default",
    ),
    "a backward op has no place in a forward graph": (
        "aten._adaptive_avg_pool2d_backward.default", "aten.avg_pool2d_backward.default",
        "aten.convolution_backward.default", "aten.embedding_dense_backward.default",
        "aten.max_pool2d_with_indices_backward.default", "aten.native_group_norm_backward.default",
        "aten.native_layer_norm_backward.default",
    ),
    "batch statistics in training mode (the graph is exported in eval mode)": (
        "aten._native_batch_norm_legit.default", "aten._native_batch_norm_legit.no_stats",
    ),
    "symbolic sizes (the graph is exported with static shapes)": (
        "aten.sym_numel.default", "aten.sym_size.int", "aten.sym_storage_offset.default",
        "aten.sym_stride.int", "aten.sym_is_contiguous.default",
    ),
    "it resizes a tensor in place": ("aten.resize_.default",),
    "an out= variant writes into a caller's tensor": ("aten.atan2.out",),
}

REFUSED: dict[str, str] = {op: why for why, ops in _REFUSED_OPS.items() for op in ops}


def canonical(op: str) -> str:
    """`op` as this table spells it: a saved program's graph (`torch.export.save`, the
    archive's `models/model.json`) writes targets as "torch.ops.aten.linear.default"."""
    return op.removeprefix("torch.ops.")


def rule_for(op: str) -> str | None:
    """The rule name for operator `op` (e.g. "aten.linear.default"), None when refused."""
    return RULES.get(canonical(op))


def refusal(op: str) -> str:
    """Why operator `op` has no rule."""
    return REFUSED.get(canonical(op), "no rule for this op")


def unsupported(ops: list[str]) -> list[str]:
    """The operators of `ops` without a rule (as this table spells them), in order, each once."""
    return [op for op in dict.fromkeys(map(canonical, ops)) if op not in RULES]
