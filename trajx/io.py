"""Safetensors in and out: checkpoints and data shards, validated against a model.

Only safetensors is ever read (never torch.load or pickle). Every problem raises
`trajx.errors.InvalidInput` with a stable code and the offending file/tensor named:
`invalid_safetensors`, `checkpoint_mismatch`, `non_finite_input`, `data_mismatch`,
`target_out_of_range`.

A checkpoint is one safetensors file, or a Hugging Face sharded one: its
`model.safetensors.index.json` (or the folder `save_pretrained` wrote) whose shards
lie next to it.
"""

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from trajx.checkpoint_names import mismatch_hint
from trajx.engine.batches import Dataset
from trajx.engine.losses import CLASSES_OR_VALUES, Task
from trajx.errors import InvalidInput

# The metadata key `trajx init` and `trajx export` mark the initializations they draw with.
INIT_SEED_KEY = "seed"
# BatchNorm's batch counter is bookkeeping, often dropped by exporters: take the model's.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file `path`; `what` names it in errors."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidInput(f"{what}: cannot read {Path(path).name} as safetensors: {exc}",
                           code="invalid_safetensors", artifact=what) from None


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` (moved to CPU, made contiguous) to `path` as safetensors.

    Equal tensors and metadata give equal bytes, in any process (see `_sort_metadata`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({n: t.detach().cpu().contiguous() for n, t in tensors.items()}, str(path),
              metadata=dict(metadata) if metadata else None)
    if metadata:
        _sort_metadata(path)


def _sort_metadata(path: Path) -> None:
    """Rewrite the header of the safetensors file `path` with its `__metadata__` keys sorted.

    safetensors keeps the metadata in a Rust HashMap whose order changes from process to
    process, and with it the file's bytes (and sha256). Sorting changes no length (the same
    keys and values in compact JSON), so the header is rewritten in place.
    """
    with open(path, "r+b") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # safetensors escaped something differently from json.dumps
            raise RuntimeError(f"{path.name}: sorted safetensors header outgrew its {length} bytes")
        file.seek(8)
        file.write(text.ljust(length, b" "))


def validate_checkpoint(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                        what: str = "checkpoint", *,
                        tied: Mapping[str, str] | None = None) -> dict[str, torch.Tensor]:
    """`state` checked against a model's `expected` state dict and cast to its dtypes.

    Names must match exactly (a missing `num_batches_tracked` is filled in, and so is a
    tied weight such as Hugging Face's `lm_head.weight`, the same tensor as another
    entry, which `save_pretrained` leaves out: from the name the checkpoint has), shapes must
    match, floating entries must be floating (any precision) and integer ones integer,
    values must be finite. Raises InvalidInput `checkpoint_mismatch` listing missing
    and extra names, naming the tensor with both shapes/dtypes, or naming both names of
    a tied tensor the checkpoint holds two different values of; `non_finite_input`
    naming the tensor.
    """
    tied = _tied_names(expected) if tied is None else tied  # meta tensors cannot tell
    optional = {n for n in expected if n.endswith(_OPTIONAL_SUFFIXES)} | set(tied) | set(tied.values())
    absent_groups = [first for first in dict.fromkeys(tied.values())
                     if first not in state and not any(p in state for p in _partners(first, tied))]
    missing = sorted((set(expected) - set(state) - optional) | set(absent_groups))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise InvalidInput(
            f"{what}: parameter names do not match the architecture; "
            f"missing: {missing or 'none'}; unexpected: {extra or 'none'}."
            + mismatch_hint(missing, extra),
            code="checkpoint_mismatch", artifact=what, missing=missing, unexpected=extra)
    out = {}
    for name, reference in expected.items():
        if name not in state:
            continue
        tensor = state[name]
        if tuple(tensor.shape) != tuple(reference.shape):
            raise InvalidInput(
                f"{what}: tensor {name!r} has shape {list(tensor.shape)}, "
                f"the architecture expects {list(reference.shape)}",
                code="checkpoint_mismatch", artifact=what, tensor=name,
                shape=list(tensor.shape), expected_shape=list(reference.shape))
        if tensor.is_floating_point() != reference.is_floating_point() or tensor.is_complex():
            raise InvalidInput(
                f"{what}: tensor {name!r} has dtype {_dtype(tensor)}, "
                f"the architecture expects {_dtype(reference)}",
                code="checkpoint_mismatch", artifact=what, tensor=name,
                dtype=_dtype(tensor), expected_dtype=_dtype(reference))
        if tensor.is_floating_point() and not tensor.is_meta and not bool(torch.isfinite(tensor).all()):
            raise InvalidInput(f"{what}: tensor {name!r} holds NaN or infinite values",
                               code="non_finite_input", artifact=what, tensor=name)
        out[name] = tensor.to(reference.dtype)
    _check_tied_copies(out, tied, what)
    for name, reference in expected.items():
        if name not in out:
            # A tied weight is its partner's tensor (`save_pretrained` and safetensors' save_model
            # write one of the names): loading the model's own copy would make two of it.
            partner = next((p for p in _partners(name, tied) if p in out), None)
            out[name] = out[partner] if partner is not None else reference.detach().clone()
    return {name: out[name] for name in expected}


def _partners(name: str, tied: Mapping[str, str]) -> list[str]:
    """The other names of `name`'s tied group (`tied` maps each later name to the first)."""
    first = tied.get(name, name)
    return [n for n in (first, *(m for m, f in tied.items() if f == first)) if n != name]


def _check_tied_copies(state: Mapping[str, torch.Tensor], tied: Mapping[str, str], what: str) -> None:
    """Refuse two different values under the names of one tied tensor: the model holds one."""
    for name, first in tied.items():
        if name in state and first in state and not state[name].is_meta \
                and not torch.equal(state[name], state[first]):
            raise InvalidInput(
                f"{what}: {first!r} and {name!r} are one tied tensor in the model, but the checkpoint "
                "holds different values under the two names; save the checkpoint from the tied model, "
                "or untie them in the model and export it again",
                code="checkpoint_mismatch", artifact=what, tensor=name, tied_with=first)


def _tied_names(expected: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Name -> earlier name, for names whose tensor is the very tensor of an earlier one
    (tied weights)."""
    first: dict[tuple, str] = {}
    tied = {}
    for name, tensor in expected.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in first:
            tied[name] = first[key]
        first.setdefault(key, name)
    return tied


def check_checkpoint_header(path: Path, expected: Mapping[str, torch.Tensor], what: str) -> None:
    """`validate_checkpoint` on the headers alone (names, shapes, dtypes; values are not
    read) of any form `load_state` reads: a long list of checkpoints is checked before any
    work, in O(1) memory."""
    header: dict[str, torch.Tensor] = {}
    for file, label in checkpoint_files(Path(path), what)[0]:
        try:
            with safe_open(str(file), framework="pt") as opened:
                slices = {name: opened.get_slice(name) for name in list(opened.keys())}  # not iterable
                header |= {name: torch.empty(s.get_shape(), device="meta",
                                             dtype=_SAFETENSORS_DTYPES.get(s.get_dtype(), torch.complex64))
                           for name, s in slices.items()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise InvalidInput(f"{label}: cannot read {file.name} as safetensors: {exc}",
                               code="invalid_safetensors", artifact=what) from None
    validate_checkpoint(header, {n: t.to("meta") for n, t in expected.items()}, what,
                        tied=_tied_names(expected))


# safetensors dtype names -> torch (one unknown to torch is reported as complex: unusable)
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                       "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
                       "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def load_checkpoint(path: Path, expected: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Read and `validate_checkpoint` a safetensors state dict (one file or sharded)."""
    return validate_checkpoint(load_state(Path(path), what), expected, what)


def load_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: a safetensors file, a sharded checkpoint's
    `*.safetensors.index.json`, or a folder holding either (`save_pretrained`'s output).

    Raises InvalidInput `invalid_safetensors` naming the file, or `invalid_checkpoint_index`
    when an index is unreadable, names a shard outside its folder, or disagrees with its shards.
    """
    files, listed = checkpoint_files(Path(path), what)
    state: dict[str, torch.Tensor] = {}
    for file, label in files:
        state |= load_tensors(file, label)
    if listed is not None and set(state) != listed:
        raise InvalidInput(
            f"{what}: the shards of {files[0][0].parent.name} hold other tensors than its weight_map names; "
            f"missing: {sorted(listed - set(state))[:5]}, unlisted: {sorted(set(state) - listed)[:5]}",
            code="invalid_checkpoint_index", artifact=what)
    return state


def checkpoint_files(path: Path, what: str) -> tuple[list[tuple[Path, str]], set[str] | None]:
    """The safetensors files of a checkpoint (`load_state`'s forms), each with how errors
    name it, and the tensor names a sharded checkpoint's index lists (None for one file)."""
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        path = index if index.is_file() else path / "model.safetensors"
    if not path.name.endswith(".index.json"):
        return [(path, what)], None
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"{what}: {path.name} is not a sharded checkpoint index: {exc}",
                           code="invalid_checkpoint_index", artifact=what) from None
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard:  # shards sit beside their index
            raise InvalidInput(f"{what}: {path.name} names shard {shard!r} outside its folder",
                               code="invalid_checkpoint_index", artifact=what, shard=str(shard))
    return [(path.parent / shard, f"{what} ({shard})") for shard in shards], set(weight_map)


def initializer_seed(path: Path) -> str | None:
    """The seed a checkpoint drawn by `trajx init` or `trajx export` records (INIT_SEED_KEY),
    None for any other checkpoint. Reads the header of `load_state`'s first file only: call
    it on a checkpoint already loaded."""
    with safe_open(str(checkpoint_files(Path(path), "checkpoint")[0][0][0]), framework="pt") as opened:
        return (opened.metadata() or {}).get(INIT_SEED_KEY)


def load_data(path: Path, what: str) -> Dataset:
    """A data shard: a safetensors file with `inputs` [N, ...] and `targets` [N, ...],
    optionally `attention_mask` [N, L] of 0/1 shaped like token `inputs`.

    Raises InvalidInput `data_mismatch` (missing tensors, lengths differ, empty,
    unusable dtypes) or `non_finite_input`.
    """
    tensors = load_tensors(path, what)
    absent = [key for key in ("inputs", "targets") if key not in tensors]
    if absent:
        raise InvalidInput(f"{what}: a data shard needs tensors 'inputs' and 'targets'; "
                           f"missing {absent}, found {sorted(tensors)}",
                           code="data_mismatch", artifact=what, missing=absent)
    inputs, targets = tensors["inputs"], tensors["targets"]
    if inputs.ndim == 0 or targets.ndim == 0 or len(inputs) != len(targets) or len(inputs) == 0:
        raise InvalidInput(
            f"{what}: 'inputs' {list(inputs.shape)} and 'targets' {list(targets.shape)} must hold "
            "the same, non-zero number of samples along their first axis",
            code="data_mismatch", artifact=what,
            inputs_shape=list(inputs.shape), targets_shape=list(targets.shape))
    for key, tensor in (("inputs", inputs), ("targets", targets)):
        if tensor.dtype == torch.bool or tensor.is_complex():
            raise InvalidInput(f"{what}: tensor {key!r} has unusable dtype {_dtype(tensor)}",
                               code="data_mismatch", artifact=what, tensor=key)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InvalidInput(f"{what}: tensor {key!r} holds NaN or infinite values",
                               code="non_finite_input", artifact=what, tensor=key)
    mask = tensors.get("attention_mask")
    if mask is not None and (mask.shape != inputs.shape or not bool(((mask == 0) | (mask == 1)).all())):
        raise InvalidInput(f"{what}: 'attention_mask' must hold 0/1 and be shaped like 'inputs' "
                           f"{list(inputs.shape)}; got {list(mask.shape)}",
                           code="data_mismatch", artifact=what, tensor="attention_mask")
    inputs = inputs.float() if inputs.is_floating_point() else inputs.long()
    targets = targets.float() if targets.is_floating_point() else targets.long()
    return Dataset(inputs, targets, None if mask is None else mask.long())


@torch.no_grad()
def validate_data(data: Dataset, model: nn.Module, what: str, sample_shape: Sequence[int],
                  task: Task = CLASSES_OR_VALUES) -> None:
    """Check that `data` fits `model`: one forward pass on 2 samples, then `task` checks
    the targets.

    `sample_shape` is the shape of one sample the model expects (its architecture's
    example input without the batch axis), named when the inputs do not fit.
    Raises InvalidInput `data_mismatch` (inputs the model cannot take, naming both
    shapes and the model's error; float targets not shaped like the outputs; class-id
    targets for a model without a class axis) or `target_out_of_range` (class id < 0
    or ≥ the number of outputs).
    """
    was_training = model.training
    model.eval()
    try:
        outputs = task.outputs(model, data.batch(slice(0, 2), "cpu"))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise InvalidInput(
            f"{what}: inputs of shape {list(data.inputs.shape)} (one sample: "
            f"{list(data.inputs.shape[1:])}, dtype {_dtype(data.inputs)}) do not fit the model, "
            f"which expects one sample of shape {list(sample_shape)}: {str(exc).splitlines()[0]}",
            code="data_mismatch", artifact=what, tensor="inputs",
            inputs_shape=list(data.inputs.shape), expected_sample_shape=list(sample_shape)) from None
    finally:
        model.train(was_training)
    task.check_data(data, outputs, what)


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")
