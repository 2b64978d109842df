"""Digits source trajectory and job specs for the end-to-end tests (tiny, seconds to train)."""

from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file

from trajx.client import Client
from trajx.demo.source import ARCH, MLP_CONFIG, DigitsSplit, load_digits_split, train_source


@dataclass(frozen=True)
class DigitsFiles:
    split: DigitsSplit
    theta0: Path
    theta_t: Path
    train: Path
    heldout: Path

    def upload(self, client: Client) -> dict[str, str]:
        """Upload the four files; returns artifact ids by role."""
        paths = {"theta0": self.theta0, "thetaT": self.theta_t, "train": self.train, "heldout": self.heldout}
        return {role: client.upload(path).id for role, path in paths.items()}


def write_digits_source(out_dir: Path) -> DigitsFiles:
    """Train the demo's digits `mlp` (a few seconds) and write θ⁰, θᵀ and the data shards."""
    split = load_digits_split()
    theta0, theta_t, _ = train_source(split, epochs=10)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(theta0, str(out_dir / "theta0.safetensors"))
    save_file(theta_t, str(out_dir / "thetaT.safetensors"))
    split.save_shards(out_dir)
    return digits_files(out_dir, split)


def digits_files(out_dir: Path, split: DigitsSplit | None = None) -> DigitsFiles:
    """The files `write_digits_source` wrote to `out_dir`."""
    return DigitsFiles(split or load_digits_split(), out_dir / "theta0.safetensors", out_dir / "thetaT.safetensors",
                       out_dir / "train.safetensors", out_dir / "heldout.safetensors")


def digits_spec(ids: dict[str, str], method: str = "fgmt", steps: int = 8, seeds: tuple[int, ...] = (1,),
                grad_batches: int = 1, arch_config: dict | None = None) -> dict:
    """A transfer job on the uploaded digits files (CPU, no permutations output)."""
    return {
        "kind": "transfer",
        "method": method,
        "arch": {"name": ARCH, "config": arch_config or MLP_CONFIG},
        "source": [ids["theta0"], ids["thetaT"]],
        "targets": [{"seed": seed} for seed in seeds],
        "train_data": ids["train"],
        "eval_data": ids["heldout"],
        "params": {"steps": steps, "batch_size": 128, "grad_batches": grad_batches, "seed": 0, "device": "cpu"},
    }
