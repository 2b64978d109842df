"""A real SGD trajectory of the zoo's `mlp` on digits, written as safetensors files."""

from dataclasses import dataclass
from pathlib import Path

import torch

from tests.support.engine_setups import digits, train
from trajx.engine.zoo import build_model, init_state_dict
from trajx.io import save_tensors

MLP = ("mlp", {"in_features": 64, "hidden": [64, 64], "num_classes": 10})
ARCH = {"name": MLP[0], "config": MLP[1]}


@dataclass
class Files:
    checkpoints: list[Path]  # oldest first
    other_run: Path  # the last checkpoint of an independent run (another seed)
    train: Path
    test: Path


def sgd_run(seed: int, epochs: int) -> list[dict[str, torch.Tensor]]:
    """One checkpoint per epoch of SGD from the zoo's seeded init."""
    model = build_model(*MLP)
    model.load_state_dict(init_state_dict(*MLP, seed))
    return train(model, digits()[0], epochs, lr=0.02, seed=seed, every_epoch=True)[1:]


def write_files(directory: Path) -> Files:
    train, test = digits()
    for name, data in (("train", train), ("test", test)):
        save_tensors(directory / f"{name}.safetensors", {"inputs": data.inputs, "targets": data.targets})
    for index, checkpoint in enumerate(sgd_run(0, epochs=8)):
        save_tensors(directory / f"epoch{index}.safetensors", checkpoint)
    save_tensors(directory / "other.safetensors", sgd_run(1, epochs=4)[-1])
    return files_in(directory)


def files_in(directory: Path) -> Files:
    """The files `write_files` wrote to `directory`."""
    return Files(sorted(directory.glob("epoch*.safetensors"), key=lambda p: int(p.stem.removeprefix("epoch"))),
                 directory / "other.safetensors", directory / "train.safetensors", directory / "test.safetensors")
