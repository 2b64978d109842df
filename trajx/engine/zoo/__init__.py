"""The model zoo: built-in architectures plus those plugged in through entry points.

    from trajx.engine.zoo import build_model, init_state_dict
    model = build_model("mlp", {"in_features": 64, "hidden": [128], "num_classes": 10})

Users train with these very modules, so their checkpoints load into the service as is.
"""

from trajx.arch_configs import ArchConfig
from trajx.engine.zoo import cnn, hf, mlp, resnet, transformer
from trajx.engine.zoo.registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    ArchitectureEntry,
    build_model,
    checkpoint_names,
    example_input,
    get_entry,
    init_state_dict,
    list_architectures,
    load_entry_points,
    parse_config,
    register,
    task_for,
)

for _name, _module in {"mlp": mlp, "cnn": cnn, "resnet": resnet, "transformer": transformer,
                      "hf": hf}.items():
    register(_name, _module.ENTRY)

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "ArchConfig",
    "ArchitectureEntry",
    "build_model",
    "checkpoint_names",
    "example_input",
    "get_entry",
    "init_state_dict",
    "list_architectures",
    "load_entry_points",
    "parse_config",
    "register",
    "task_for",
]
