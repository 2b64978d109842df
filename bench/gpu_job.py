"""Write an end-to-end FGMT job for `trajx run` into a directory (used by bench/gpu.sh).

    .venv/bin/python bench/gpu_job.py DIR [--device cuda] [--steps 30] [--targets 3]

A 64→512→512→10 MLP source trained on digits (θ⁰, θᵀ), the train/held-out shards and
`spec.json`: FGMT onto `--targets` seeds (an ensemble: the source gradients are shared)
with `params.device` set, so the job runs exactly as a worker would run it.
"""

import argparse
import json
from pathlib import Path

from bench_engine import Task, digits, sgd

from trajx.engine.zoo import build_model, init_state_dict
from trajx.io import save_tensors

ARCH = ("mlp", {"in_features": 64, "hidden": [512, 512], "num_classes": 10})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--device", default="cuda", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--targets", type=int, default=3)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    train, test = digits(images=False)
    model = build_model(*ARCH)
    theta0 = init_state_dict(*ARCH, seed=0)
    model.load_state_dict(theta0)
    thetaT = sgd(model, train, Task("MLP 64-512-512-10", ARCH, images=False, epochs=20, lr=0.005), 0)
    save_tensors(args.directory / "theta0.safetensors", theta0)
    save_tensors(args.directory / "thetaT.safetensors", thetaT)
    for name, data in (("train", train), ("test", test)):
        save_tensors(args.directory / f"{name}.safetensors", {"inputs": data.inputs, "targets": data.targets})
    spec = {"method": "fgmt", "arch": {"name": ARCH[0], "config": ARCH[1]},
            "source": ["theta0.safetensors", "thetaT.safetensors"],
            "targets": [{"seed": seed} for seed in range(1, args.targets + 1)],
            "train_data": "train.safetensors", "eval_data": "test.safetensors",
            "params": {"steps": args.steps, "batch_size": 128, "device": args.device}}
    (args.directory / "spec.json").write_text(json.dumps(spec, indent=2))


if __name__ == "__main__":
    main()
