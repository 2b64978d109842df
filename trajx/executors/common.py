"""Pieces every executor shares: BN batches, result metadata, reports (inputs: `inputs.py`)."""

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from trajx.engine.batches import BatchSampler, Dataset
from trajx.job_spec import Architecture, RunParams
from trajx.version import __version__


def draw_batches(data: Dataset, params: RunParams, count: int, device: torch.device,
                 offset: int = 0) -> list[torch.Tensor]:
    """`count` seeded input batches of `data` (BatchNorm re-estimation, activations).

    `offset` draws a different, equally reproducible stream for a second use.
    """
    sampler = BatchSampler(len(data), params.batch_size,
                           torch.Generator().manual_seed(params.seed + offset))
    return [data.batch(indices, device)[0] for indices in sampler.draw_many(count)]


def tensor_metadata(kind: str, arch: Architecture, **extra: str) -> dict[str, str]:
    """What a result checkpoint carries to say where it came from."""
    return {"trajx_version": __version__, "kind": kind,
            "arch": json.dumps(arch.model_dump(mode="json")), **extra}


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))


def versions() -> dict[str, str]:
    """Versions of what computed a result (for its report)."""
    found = {"trajx": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for package in ("numpy", "scipy", "safetensors", "lapx", "transformers"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
