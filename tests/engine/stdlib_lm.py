"""A character-level language-modelling task every machine has: the sources of Python's
standard library (read from `sysconfig.get_paths()["stdlib"]`, nothing downloaded).

Characters are byte values, those above 126 folded into 127 (vocabulary of 128). Files
are split, not windows: every `HELD_OUT_EVERY`-th file (in sorted order) is held out, so
the held-out text was never seen in training. A sample is a window of `length` tokens
whose labels are the tokens themselves (Hugging Face's causal-LM convention).
Used by `bench/bench_lm.py` and its fast test.
"""

import sysconfig
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trajx.engine.batches import BatchSampler, Dataset
from trajx.engine.losses import Task
from trajx.engine.zoo import build_model, init_state_dict, task_for

VOCAB = 128
HELD_OUT_EVERY = 10


def gpt2_config(width: int = 64, layers: int = 2, heads: int = 4, length: int = 64,
                init_std: float = 0.02) -> dict:
    """A GPT-2 family `hf` config for this vocabulary; `init_std` is its initializer_range
    (GPT-2's own 0.02, or about 1/sqrt(width) like PyTorch's default Linear init)."""
    return {"task": "causal-lm", "model_type": "gpt2", "n_embd": width, "n_layer": layers,
            "n_head": heads, "n_positions": length, "vocab_size": VOCAB,
            "bos_token_id": 0, "eos_token_id": 0, "initializer_range": init_std}


def _sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py")
                  if not {"test", "tests", "site-packages", "idlelib"} & set(p.relative_to(root).parts))


def encode_text(data: bytes) -> torch.Tensor:
    """Token ids of `data`: byte values, those above 126 folded into 127."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clamp(max=VOCAB - 1).long()


def _encode(paths: list[Path], max_chars: int) -> torch.Tensor:
    chunks, total = [], 0
    for path in paths:
        data = path.read_bytes()[: max_chars - total]
        chunks.append(encode_text(data))
        total += len(data)
        if total >= max_chars:
            break
    return torch.cat(chunks)


def windows(tokens: torch.Tensor, length: int) -> Dataset:
    count = len(tokens) // length
    inputs = tokens[: count * length].reshape(count, length)
    return Dataset(inputs, inputs.clone())


def stdlib_text(length: int, train_chars: int, held_out_chars: int) -> tuple[Dataset, Dataset]:
    """(train, held-out) windows of `length` characters from the standard library's sources."""
    paths = _sources()
    held_out = paths[::HELD_OUT_EVERY]
    train = [p for i, p in enumerate(paths) if i % HELD_OUT_EVERY]
    return (windows(_encode(train, train_chars), length),
            windows(_encode(held_out, held_out_chars), length))


def train(model: nn.Module, task: Task, data: Dataset, steps: int, lr: float, batch_size: int,
          seed: int) -> dict[str, torch.Tensor]:
    """Train `model` in place with AdamW (cosine decay to 0); returns the final state."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    sampler = BatchSampler(len(data), batch_size, torch.Generator().manual_seed(seed))
    model.train()
    for _ in range(steps):
        batch = data.batch(sampler.draw(), "cpu")
        optimizer.zero_grad()
        task.loss(task.outputs(model, batch), batch.targets).backward()
        optimizer.step()
        schedule.step()
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def trained_pair(arch: tuple[str, dict], data: Dataset, steps: int, lr: float, batch_size: int,
                 seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(θ⁰, θᵀ): the zoo's init for `seed` and the same model trained from it."""
    init = init_state_dict(*arch, seed=seed)
    model = build_model(*arch)
    model.load_state_dict(init)
    return init, train(model, task_for(*arch), data, steps, lr, batch_size, seed)


# The fast tests' model. initializer_range 0.2 (about 1/sqrt(width)): with GPT-2's 0.02,
# AdamW's displacement dwarfs the init and Naive is already as good as the source (see the
# LM table in docs/benchmarks.md).
TINY_ARCH = ("hf", gpt2_config(width=32, layers=2, heads=4, length=32, init_std=0.2))


def tiny_lm_source() -> tuple[Dataset, Dataset, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(train, held-out, θ⁰, θᵀ) of TINY_ARCH, trained for 120 steps (seconds)."""
    train_data, held_out = stdlib_text(32, 60_000, 12_000)
    theta0, theta_t = trained_pair(TINY_ARCH, train_data, steps=120, lr=3e-3, batch_size=32, seed=0)
    return train_data, held_out, theta0, theta_t


def write_tiny_lm_source(out_dir: Path) -> None:
    """`tiny_lm_source` as safetensors files in `out_dir` (the `tiny_lm` fixture trains it once per run)."""
    train_data, held_out, theta0, theta_t = tiny_lm_source()
    out_dir.mkdir(parents=True)
    for role, data in (("train", train_data), ("heldout", held_out)):
        save_file({"inputs": data.inputs.contiguous(), "targets": data.targets.contiguous()},
                  str(out_dir / f"{role}.safetensors"))
    for role, state in (("theta0", theta0), ("thetaT", theta_t)):
        # clone: GPT-2's lm_head.weight is tied to its embedding, and safetensors refuses shared tensors.
        save_file({n: t.clone() for n, t in state.items()}, str(out_dir / f"{role}.safetensors"))


def read_tiny_lm_source(out_dir: Path) -> tuple[Dataset, Dataset, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """What `write_tiny_lm_source` wrote: (train, held-out, θ⁰, θᵀ), as `tiny_lm_source` returns them."""
    data = [Dataset(**load_file(str(out_dir / f"{role}.safetensors"))) for role in ("train", "heldout")]
    return data[0], data[1], load_file(str(out_dir / "theta0.safetensors")), load_file(str(out_dir / "thetaT.safetensors"))
