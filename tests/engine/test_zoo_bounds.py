"""Issue 14: every size in a zoo config is bounded, nothing is silently clamped, the
config models need no torch, and allocation failures read as out of memory."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import trajx.cli.local  # noqa: F401  (registers the commands)
from trajx.cli.app import app
from trajx.engine.zoo import build_model
from trajx.errors import InvalidInput, is_out_of_memory

MLP = {"in_features": 4, "hidden": [8], "num_classes": 2}


@pytest.mark.parametrize("arch, config, field", [
    ("mlp", {**MLP, "hidden": [-1]}, "arch.config.hidden[0]"),
    ("mlp", {**MLP, "hidden": [0]}, "arch.config.hidden[0]"),
    ("mlp", {**MLP, "hidden": [2**40]}, "arch.config.hidden[0]"),
    ("mlp", {**MLP, "hidden": [8.0]}, "arch.config.hidden[0]"),
    ("mlp", {**MLP, "in_features": True}, "arch.config.in_features"),
    ("cnn", {"channels": [-4], "image_size": 4, "pool_every": 1}, "arch.config.channels[0]"),
    ("cnn", {"channels": [8], "fc": [0], "image_size": 4, "pool_every": 1}, "arch.config.fc[0]"),
    ("cnn", {"channels": [8], "image_size": 4, "pool_every": 1, "width": 0.01}, "arch.config"),
    ("cnn", {"channels": [60_000], "image_size": 4, "pool_every": 1, "width": 2.0}, "arch.config"),
    ("resnet", {"width": 0.01}, "arch.config"),
    ("transformer", {"d_model": 2**20}, "arch.config.d_model"),
    ("transformer", {"d_model": 8, "num_heads": 2, "mlp_ratio": 0.01}, "arch.config"),
])
def test_out_of_bounds_sizes_are_invalid_config(arch, config, field):
    with pytest.raises(InvalidInput) as caught:
        build_model(arch, config)
    assert caught.value.code == "invalid_config" and caught.value.details["field"] == field


def test_the_cnn_no_longer_clamps_widths_to_one():
    with pytest.raises(InvalidInput, match="scales channels"):
        build_model("cnn", {"channels": [8, 8], "image_size": 4, "pool_every": 2, "width": 0.05})
    model = build_model("cnn", {"channels": [8, 8], "fc": [4], "image_size": 4, "pool_every": 2, "width": 0.5})
    assert model.features[0].conv.out_channels == 4 and model.fc[0].out_features == 2


def test_the_config_models_load_without_torch():
    code = ("import sys, trajx.arch_configs, trajx.job_spec; "
            "trajx.arch_configs.check_builtin_config('mlp', {'in_features': 2, 'hidden': [2], 'num_classes': 2}); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_describe_prints_a_clear_error_for_a_bad_config():
    result = CliRunner().invoke(app, ["describe", "--arch", "mlp", "--config", json.dumps({**MLP, "hidden": [-1]})])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "arch.config.hidden[0]" in result.stderr and "greater than or equal to 1" in result.stderr


def test_describe_reports_an_allocation_failure_as_out_of_memory(monkeypatch):
    def allocate(*_):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr("trajx.engine.zoo.build_model", allocate)
    result = CliRunner().invoke(app, ["describe", "--arch", "mlp", "--config", json.dumps(MLP)])
    assert result.exit_code == 1 and "does not fit in memory" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("error, oom", [
    (MemoryError(), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4398046511104 bytes"), True),
    (RuntimeError("Trying to create tensor with negative dimension -1"), False),
    (ValueError("out of memory"), False),
])
def test_allocation_failures_are_recognised(error, oom):
    assert is_out_of_memory(error) is oom
