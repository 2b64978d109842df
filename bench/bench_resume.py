"""What resuming a transfer costs, and why gradient pairs are recomputed rather than stored.

    .venv/bin/python -m bench.bench_resume [--steps 20] [--targets 2]

FGMT on the digits MLP and CNN (tests.support.engine_setups), CPU: a clean run recording its
step states, then a run resumed after step T - 1 (the worst case: every earlier pair is
recomputed). Per model it prints the size of one step's recorded state (permutations) next
to what storing that step's gradient pair would take, the time to write those pair bytes
(safetensors to a file, fsync), the time the resumed run spent recomputing all T - 1 pairs,
and the same resume from records that kept their pairs (trajx.executors.transfer.keeps_pairs).
The rule this measures (docs/reliability.md): a step's pair is kept with its record while
it is small (RECORD_TENSORS_MAX_BYTES), where writing it is cheaper than recomputing it;
above that a record stays O(hidden units) and a resume recomputes the pairs.
"""

import argparse
import os
import tempfile
import time
from dataclasses import replace

import torch
from safetensors.torch import save, save_file

from bench.tables import table
from tests.support.engine_setups import cnn_setup, mlp_setup
from trajx.engine.options import TransferOptions
from trajx.engine.transfer.gmt import StepState, transfer
from trajx.engine.transfer.methods import FGMT


def _fsync_write(tensors: dict[str, torch.Tensor]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pairs.safetensors")
        started = time.perf_counter()
        save_file(tensors, path)
        with open(path, "rb+") as file:
            os.fsync(file.fileno())
        return time.perf_counter() - started


def measure(name: str, setup, steps: int, targets: int) -> tuple[str, ...]:
    options = TransferOptions(steps=steps, batch_size=128, grad_batches=2, device="cpu", seed=0)
    inits = [setup.init(seed) for seed in range(1, targets + 1)]
    states: list[StepState] = []

    def run(**how):
        started = time.perf_counter()
        result = transfer(setup.model(), setup.spec, setup.source, inits, setup.train, options, method=FGMT(), **how)
        return result, time.perf_counter() - started

    clean, clean_seconds = run(on_step=states.append, step_pairs=True)
    resumed, resumed_seconds = run(resume=[replace(s, pairs=None) for s in states[:-1]])
    kept, kept_seconds = run(resume=states[:-1])
    same = all(torch.equal(a.last[n], b.last[n]) and torch.equal(a.last[n], c.last[n])
               for a, b, c in zip(clean.targets, resumed.targets, kept.targets) for n in a.last)
    state_bytes = len(save({f"{k}/{g}": p for k, perm in enumerate(states[-1].perms) for g, p in perm.items()}))
    model = setup.model()
    matched = {n: torch.randn_like(p) for n, p in model.named_parameters()
               if any(g is not None for g in setup.spec.param_groups.get(n, ()))}
    # One step's pairs: a target gradient per target and the source gradient they share.
    pair = {f"target/{k}/{n}": t.clone() for k in range(targets) for n, t in matched.items()}
    pair |= {f"source/{n}": t.clone() for n, t in matched.items()}
    pair_bytes = sum(t.numel() * t.element_size() for t in pair.values())
    write_seconds = _fsync_write(pair)
    # The resumed run did one step of work plus the replay: the clean run's mean step is that one step.
    replay_seconds = resumed_seconds - clean_seconds / steps
    return (name, f"{steps}", f"{state_bytes / 1024:.1f} KiB", f"{pair_bytes / 1024:.0f} KiB",
            f"{write_seconds * 1000:.1f} ms", f"{replay_seconds / (steps - 1) * 1000:.1f} ms",
            f"{clean_seconds:.2f} s", f"{resumed_seconds:.2f} s", f"{kept_seconds:.2f} s", "yes" if same else "NO")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--targets", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(name, setup(), args.steps, args.targets) for name, setup in (("mlp", mlp_setup),
                                                                                 ("cnn", cnn_setup))]
    header = ("model", "steps", "state/step", "pair/step", "pair write", "replay/step", "clean run",
              "resumed at T-1", "same, pairs kept", "identical")
    table("Resume: what a step record costs and what it spares", header, rows)
    print(f"\n{os.cpu_count()} CPUs, 1 thread; 1-min load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
