"""Checkpoint and data-shard I/O: every bad input gives its code, naming tensor and shapes."""

import pytest
import torch

from trajx.engine.zoo import build_model, example_input, init_state_dict
from trajx.errors import InvalidInput
from trajx.io import (
    load_checkpoint,
    load_data,
    load_tensors,
    save_tensors,
    validate_checkpoint,
    validate_data,
)

MLP = ("mlp", {"in_features": 64, "hidden": [16], "num_classes": 10, "norm": "batchnorm"})
SAMPLE = example_input(*MLP).shape[1:]


@pytest.fixture
def model():
    return build_model(*MLP)


@pytest.fixture
def good():
    return init_state_dict(*MLP, seed=3)


def error_of(call, *args) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        call(*args)
    return info.value


def test_checkpoint_round_trips_with_metadata(tmp_path, model, good):
    path = tmp_path / "ckpt.safetensors"
    save_tensors(path, good, {"method": "fgmt"})
    loaded = load_checkpoint(path, model.state_dict(), "source[0]")
    assert all(torch.equal(loaded[n], good[n]) for n in good)


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04pickle")
    error = error_of(load_tensors, path, "source[1]")
    assert error.code == "invalid_safetensors" and "source[1]" in error.message


def test_missing_and_extra_names_are_listed(model, good):
    state = {n: t for n, t in good.items() if n != "head.bias"} | {"head.scale": torch.ones(1)}
    error = error_of(validate_checkpoint, state, model.state_dict(), "source[0]")
    assert error.code == "checkpoint_mismatch"
    assert error.details["missing"] == ["head.bias"] and error.details["unexpected"] == ["head.scale"]
    assert "head.bias" in error.message and "head.scale" in error.message


def test_wrong_shape_names_the_tensor_and_both_shapes(model, good):
    state = good | {"blocks.0.fc.weight": torch.zeros(16, 32)}
    error = error_of(validate_checkpoint, state, model.state_dict(), "targets[0].checkpoint")
    assert error.code == "checkpoint_mismatch" and error.details["tensor"] == "blocks.0.fc.weight"
    assert "[16, 32]" in error.message and "[16, 64]" in error.message


def test_wrong_dtype_names_the_tensor(model, good):
    state = good | {"head.bias": torch.zeros(10, dtype=torch.int32)}
    error = error_of(validate_checkpoint, state, model.state_dict(), "source[0]")
    assert error.code == "checkpoint_mismatch" and "'head.bias'" in error.message
    assert error.details["dtype"] == "int32" and error.details["expected_dtype"] == "float32"


def test_non_finite_values_name_the_tensor(model, good):
    broken = {n: t.clone() for n, t in good.items()}
    broken["head.weight"][0, 0] = float("inf")
    error = error_of(validate_checkpoint, broken, model.state_dict(), "source[1]")
    assert error.code == "non_finite_input" and error.details["tensor"] == "head.weight"


def test_absent_batch_counter_and_half_precision_are_accepted(model, good):
    state = {n: (t.half() if t.is_floating_point() else t) for n, t in good.items()
             if not n.endswith("num_batches_tracked")}
    loaded = validate_checkpoint(state, model.state_dict())
    assert loaded["blocks.0.norm.num_batches_tracked"].dtype == torch.int64
    assert loaded["head.weight"].dtype == torch.float32


def shard(tmp_path, **tensors):
    path = tmp_path / "data.safetensors"
    save_tensors(path, tensors)
    return path


def test_data_needs_inputs_and_targets(tmp_path):
    error = error_of(load_data, shard(tmp_path, inputs=torch.zeros(4, 64)), "train_data")
    assert error.code == "data_mismatch" and error.details["missing"] == ["targets"]


def test_data_lengths_must_agree(tmp_path):
    path = shard(tmp_path, inputs=torch.zeros(4, 64), targets=torch.zeros(3, dtype=torch.int64))
    error = error_of(load_data, path, "train_data")
    assert error.code == "data_mismatch" and "[4, 64]" in error.message and "[3]" in error.message


def test_non_finite_inputs_are_refused(tmp_path):
    inputs = torch.zeros(4, 64)
    inputs[1, 2] = float("nan")
    error = error_of(load_data, shard(tmp_path, inputs=inputs, targets=torch.zeros(4, dtype=torch.int64)),
                     "eval_data")
    assert error.code == "non_finite_input" and error.details["tensor"] == "inputs"


def test_inputs_that_do_not_fit_the_model_name_the_shape(tmp_path, model):
    data = load_data(shard(tmp_path, inputs=torch.zeros(4, 32), targets=torch.zeros(4, dtype=torch.int64)),
                     "train_data")
    error = error_of(validate_data, data, model, "train_data", SAMPLE)
    assert error.code == "data_mismatch" and "[4, 32]" in error.message and "[32]" in error.message
    assert "expects one sample of shape [64]" in error.message
    assert error.details["inputs_shape"] == [4, 32] and error.details["expected_sample_shape"] == [64]


@pytest.mark.parametrize("bad", [10, -1])
def test_class_ids_outside_the_model_classes_are_refused(tmp_path, model, bad):
    targets = torch.tensor([0, 1, bad, 2])
    data = load_data(shard(tmp_path, inputs=torch.zeros(4, 64), targets=targets), "train_data")
    error = error_of(validate_data, data, model, "train_data", SAMPLE)
    assert error.code == "target_out_of_range" and error.details["num_classes"] == 10
    assert str(bad) in error.message


def test_float_targets_must_match_the_outputs(tmp_path, model):
    data = load_data(shard(tmp_path, inputs=torch.zeros(4, 64), targets=torch.zeros(4, 3)), "train_data")
    error = error_of(validate_data, data, model, "train_data", SAMPLE)
    assert error.code == "data_mismatch" and "[10]" in error.message
    fitting = load_data(shard(tmp_path, inputs=torch.zeros(4, 64), targets=torch.zeros(4, 10)), "train_data")
    validate_data(fitting, model, "train_data", SAMPLE)
