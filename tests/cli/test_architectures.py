"""`trajx architectures`: plug-ins registered through entry points are listed as such."""

from importlib.metadata import EntryPoint

import pytest
from pydantic import BaseModel

from trajx.cli.architectures import describe_architectures
from trajx.engine.zoo import ENTRY_POINT_GROUP, REGISTRY, ArchitectureEntry, mlp
from trajx.errors import InvalidInput


class ToyConfig(BaseModel):
    width: int = 8
    depth: int


TOY = ArchitectureEntry(builder=lambda c: None, config_model=ToyConfig,
                        example_input=mlp.ENTRY.example_input, description="a toy plug-in")


@pytest.fixture
def toy_plugin():
    yield EntryPoint("toy_arch", f"{__name__}:TOY", ENTRY_POINT_GROUP)
    REGISTRY.pop("toy_arch", None)


def test_plugin_architecture_is_listed_with_its_origin_and_keys(toy_plugin):
    found = {a["name"]: a for a in describe_architectures([toy_plugin])}
    assert found["toy_arch"]["origin"] == f"plug-in {__name__}:TOY"
    assert found["toy_arch"]["config"] == [
        {"key": "width", "type": "int", "required": False, "default": 8},
        {"key": "depth", "type": "int", "required": True, "default": None}]
    assert found["mlp"]["origin"] == "built-in"


def test_broken_plugin_is_named():
    with pytest.raises(InvalidInput, match="nowhere"):
        describe_architectures([EntryPoint("nowhere", "no_such_module:X", ENTRY_POINT_GROUP)])
