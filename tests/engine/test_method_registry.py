"""The transfer methods are named once (trajx.method_registry): the engine's strategies, the
job spec, the executor and the CLI help all follow it."""

import inspect

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import trajx.cli.local
import trajx.cli.remote  # noqa: F401  (registers `submit`)
from trajx.cli.app import app
from trajx.engine.transfer.methods import STRATEGIES
from trajx.job_spec import TransferJob, parse_job_spec
from trajx.method_registry import DEFAULT_METHOD, TRANSFER_METHODS


def test_every_registered_method_has_a_strategy_taking_the_inputs_it_declares():
    assert set(STRATEGIES) == set(TRANSFER_METHODS)
    for name, strategy in STRATEGIES.items():
        assert strategy.name == name
        assert list(inspect.signature(strategy).parameters) == list(TRANSFER_METHODS[name].needs), name


def test_the_spec_offers_exactly_the_registered_methods():
    schema = TransferJob.model_json_schema()["properties"]["method"]
    assert schema["enum"] == list(TRANSFER_METHODS) and schema["default"] == DEFAULT_METHOD


@pytest.mark.parametrize("name", [n for n, info in TRANSFER_METHODS.items() if info.needs])
def test_a_method_s_declared_inputs_are_required_on_every_target(name):
    document = {"kind": "transfer", "method": name, "arch": {"name": "mlp", "config": {}},
                "source": ["a", "b"], "targets": [{"seed": 1}], "train_data": "d"}
    need = TRANSFER_METHODS[name].needs[0]
    with pytest.raises(ValidationError, match=rf"method '{name}' needs '{need}' on every target; missing: \[0\]"):
        parse_job_spec(document)


@pytest.mark.parametrize("command", ["run", "submit"])
def test_cli_help_lists_every_method(command):
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in TRANSFER_METHODS:
        assert name in result.output
