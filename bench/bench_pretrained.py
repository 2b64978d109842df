"""The pre-trained scenario: move a fine-tuning run onto another backbone (prints tables, asserts nothing).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_pretrained.py            # a few CPU-minutes per case
    PYTHONPATH=$PWD .venv/bin/python bench/bench_pretrained.py --quick    # one seed pair, smaller T
    PYTHONPATH=$PWD .venv/bin/python bench/bench_pretrained.py --study --cases mlp,cnn

Per seed pair two backbones are pre-trained from different seeds on task A, the source
backbone is fine-tuned on task B, and that fine-tuning run (base θ₁⁰, fine-tuned θ₁ᵀ) is
transferred onto the second backbone θ₂⁰. Everything is scored on task B's held-out split.

- `mlp`, `cnn`: bench_engine's digits MLP and BatchNorm CNN, task A = digits 0-4, task B =
  digits 5-9 (same 10-way head: the untransferred backbone scores 0 on B).
- `lm`: a char-level GPT-2 (`hf`), task A = the standard library's Python sources, task B =
  English prose (pydoc's topic help, which ships with Python), held-out next-token accuracy.

Rows: the backbone untransferred, Naive (the fine-tuning delta added unchanged, the "delta
transplant"), FGMT, GMT, Oracle (π from the real fine-tuning displacement of the target)
and the target fine-tuned for real; last step, best step and where the best was.
`fgmt`/`gmt` are the published algorithm (raw gradient pairs), `unit` the same with
`pair_weighting="unit"` (each pair scaled to unit norms). `--study` adds the variants of
item 2 of issue 23 (T, G, schedule, recent pairs weighted up, π started from or replaced
by weight matching of the two backbones). The fine-tuning table fine-tunes the transferred
models further (best step), next to the new backbone fine-tuned from scratch (accuracy after
each epoch), and says per seed pair how many epochs from scratch reach the same accuracy.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pydoc_data.topics import topics

import torch
from torch import nn

from bench.bench_engine import TASKS, digits, mean_std, sgd
from tests.engine.stdlib_lm import encode_text, gpt2_config, stdlib_text, train, windows
from trajx.engine.batches import Dataset
from trajx.engine.bn import reestimate_batch_norm
from trajx.engine.losses import CLASSES_OR_VALUES, Task
from trajx.engine.matching.descent import PairBank
from trajx.engine.metrics import evaluate
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.spec import Permutation
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import TransferRun, transfer
from trajx.engine.transfer.methods import FGMT, GMT, Method, Naive, Oracle
from trajx.engine.zoo import build_model, example_input, init_state_dict, task_for

State = dict[str, torch.Tensor]


def only(data: Dataset, classes: range) -> Dataset:
    keep = torch.isin(data.targets, torch.tensor(list(classes)))
    return Dataset(data.inputs[keep], data.targets[keep])


@dataclass
class Case:
    """One architecture with its two tasks and training recipes.

    `pretrain(init, seed)` trains a backbone on task A; `epoch(model, seed)` trains a model
    in place for one epoch of task B (the fine-tuning recipe, also the further training).
    """

    label: str
    arch: tuple[str, dict]
    task: Task
    train: Dataset  # task B
    held_out: Dataset  # task B
    pretrain: Callable[[State, int], State]
    epoch: Callable[[nn.Module, int], None]
    finetune_epochs: int
    batch_size: int
    max_steps: int = 1000  # T is the smaller of this and --steps (GMT costs T² backward passes)

    def model(self, state: State) -> nn.Module:
        model = build_model(*self.arch)
        model.load_state_dict(state)
        return model

    def score(self, state: State) -> float:
        model = self.model(state)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            reestimate_batch_norm(model, [self.train.inputs[:256]])
        return evaluate(model, self.held_out, 256, "cpu", self.task)["accuracy"]

    def fine_tune(self, state: State, epochs: int, seed: int) -> list[State]:
        """The states after each of `epochs` epochs of task B from `state`."""
        model, states = self.model(state), []
        for epoch in range(epochs):
            self.epoch(model, 100 * seed + epoch)
            states.append({n: t.detach().clone() for n, t in model.state_dict().items()})
        return states


def digits_case(name: str, pre_epochs: int, finetune_epochs: int) -> Case:
    recipe = TASKS[name]
    train_all, test_all = digits(recipe.images)
    task_a, train_b = only(train_all, range(5)), only(train_all, range(5, 10))

    def pretrain(init: State, seed: int) -> State:
        return sgd(_loaded(recipe.arch, init), task_a, replace(recipe, epochs=pre_epochs), seed)

    def epoch(model: nn.Module, seed: int) -> None:
        sgd(model, train_b, replace(recipe, epochs=1), seed)

    return Case(f"{recipe.label}: digits 0-4 -> 5-9", recipe.arch, CLASSES_OR_VALUES, train_b,
                only(test_all, range(5, 10)), pretrain, epoch, finetune_epochs, 128)


def lm_case(pre_steps: int, epoch_steps: int, finetune_epochs: int) -> Case:
    arch = ("hf", gpt2_config(width=64, layers=2, heads=4, length=64, init_std=0.2))
    task = task_for(*arch)
    code, _ = stdlib_text(64, 200_000, 64)
    prose = encode_text("".join(topics[key] for key in sorted(topics)).encode())
    cut = len(prose) * 9 // 10
    train_b, held_out = windows(prose[:cut], 64), windows(prose[cut:], 64)

    def pretrain(init: State, seed: int) -> State:
        return train(_loaded(arch, init), task, code, pre_steps, 3e-3, 32, seed)

    def epoch(model: nn.Module, seed: int) -> None:
        train(model, task, train_b, epoch_steps, 1e-3, 32, seed)

    return Case(f"char GPT-2 64x2: stdlib code -> pydoc prose ({len(train_b)} windows)", arch, task,
                train_b, held_out, pretrain, epoch, finetune_epochs, 64, max_steps=10)


def _loaded(arch: tuple[str, dict], state: State) -> nn.Module:
    model = build_model(*arch)
    model.load_state_dict(state)
    return model


# -- variants of the method for the study ------------------------------------------------


class AlignedStart:
    """Start π from weight matching of the target backbone onto the source backbone
    (Git Re-Basin on θ₂⁰, θ₁⁰) instead of the identity."""

    def initial_perms(self, run: TransferRun) -> list[Permutation]:
        source = {n: run.source_origin[n] for n in run.matched_names}
        perms = []
        for k, init in enumerate(run.target_inits):
            bank = PairBank.from_pairs([(init, source)], run.matched_names, run.device)
            perms.append(run.match(bank, run.spec.identity(), k).perm)
        return perms


class Aligned(AlignedStart, Naive):
    name, needs_groups = "aligned", True


class AlignedFGMT(AlignedStart, FGMT):
    pass


class RecentFGMT(FGMT):
    """FGMT weighting pair t by (t + 1) / T: the pairs near the point being placed count most."""

    def prepare(self, run: TransferRun, bank: PairBank, k: int, perm: Permutation, step: int) -> None:
        weight = step / run.params.steps
        bank.add({n: g * weight for n, g in run.pair_target(k, perm, step - 1).items()})


# -- the run --------------------------------------------------------------------------------


@dataclass
class Row:
    last: list[float]
    best: list[float]
    best_step: list[float]


def run_case(case: Case, args: argparse.Namespace) -> None:
    spec = derive_spec(build_model(*case.arch), example_input(*case.arch))
    steps = min(args.steps, case.max_steps)
    further = min(args.further, case.finetune_epochs)  # the from-scratch curve is that long
    base = TransferOptions(steps=steps, batch_size=case.batch_size, device="cpu")
    raw, unit = replace(base, pair_weighting="none"), replace(base, pair_weighting="unit")
    variants: list[tuple[str, Method, TransferOptions]] = [
        ("naive", Naive(), base), ("fgmt", FGMT(), raw), ("gmt", GMT(), raw),
        ("fgmt unit", FGMT(), unit), ("gmt unit", GMT(), unit)]
    if args.study:
        variants += [
            ("fgmt T=2x", FGMT(), replace(raw, steps=2 * steps)),
            ("fgmt G=4", FGMT(), replace(raw, grad_batches=4)),
            ("fgmt uniform", FGMT(), replace(raw, schedule="uniform")),
            ("aligned (no grads)", Aligned(), raw),
            ("fgmt aligned start", AlignedFGMT(), raw),
            ("fgmt unit T=2x", FGMT(), replace(unit, steps=2 * steps)),
            ("fgmt unit G=4", FGMT(), replace(unit, grad_batches=4)),
            ("fgmt unit uniform", FGMT(), replace(unit, schedule="uniform")),
            ("fgmt unit recent", RecentFGMT(), unit),
        ]
    rows: dict[str, Row] = {}
    curves: dict[str, list[list[float]]] = {}  # per start, per pair: score after 0 … further epochs
    scratch: list[list[float]] = []  # per pair: the new base after 0 … finetune_epochs epochs
    seconds: dict[str, list[float]] = {}

    def record(name: str, last: float, best: float, step: int) -> None:
        row = rows.setdefault(name, Row([], [], []))
        row.last.append(last)
        row.best.append(best)
        row.best_step.append(step)

    started = time.perf_counter()
    for pair in range(args.seeds):
        source_base = case.pretrain(init_state_dict(*case.arch, seed=pair), pair)
        target_base = case.pretrain(init_state_dict(*case.arch, seed=1000 + pair), 1000 + pair)
        source_tuned = case.fine_tune(source_base, case.finetune_epochs, pair)[-1]
        target_run = [target_base, *case.fine_tune(target_base, case.finetune_epochs, 1000 + pair)]
        target_scores = [case.score(s) for s in target_run]
        record("target untransferred", target_scores[0], target_scores[0], 0)
        best_epoch = max(range(len(target_scores)), key=target_scores.__getitem__)
        record("target fine-tuned", target_scores[-1], target_scores[best_epoch], best_epoch)
        scratch.append(target_scores)
        curves.setdefault("new base from scratch", []).append(target_scores[: further + 1])
        for name, method, options in [*variants, ("oracle", Oracle([target_run[-1]]), base)]:
            start = time.perf_counter()
            result = transfer(build_model(*case.arch), spec, [source_base, source_tuned], [target_base],
                              case.train, options, method=method, eval_data=case.held_out,
                              task=case.task).targets[0]
            seconds.setdefault(name, []).append(time.perf_counter() - start)
            record(name, result.steps[-1]["accuracy"], result.steps[result.best_step - 1]["accuracy"],
                   result.best_step)
            if name in ("naive", "fgmt", "fgmt unit", "oracle") and further:
                tuned = case.fine_tune(result.best, further, 2000 + pair)
                curves.setdefault(f"{name} (best step) + training", []).append(
                    [case.score(result.best), *map(case.score, tuned)])
        print(f"{case.label}: seed pair {pair} done, {time.perf_counter() - started:.0f} s wall so far",
              file=sys.stderr, flush=True)

    print(f"\n## {case.label}, T={steps}, cosine, {args.seeds} seed pairs "
          f"(source and target fine-tuned {case.finetune_epochs} epochs)")
    print(f"{'method':<22} {'last %':>12} {'best %':>12} {'best step':>12} {'seconds':>8}")
    for name, row in rows.items():
        print(f"{name:<22} {mean_std(row.last, 100):>12} {mean_std(row.best, 100):>12} "
              f"{mean_std(row.best_step):>12} {statistics.fmean(seconds.get(name, [0.0])):>8.1f}")
    if further:
        print(f"\n### {case.label}: held-out % after e more epochs of fine-tuning")
        print(f"{'start':<34} " + " ".join(f"{f'e={e}':>12}" for e in range(further + 1))
              + f" {'scratch epochs to e=0, e=' + str(further):>30}")
        for name, runs in curves.items():
            catch_up = " ".join(f"{_epochs_to_reach(base, run[0])}/{_epochs_to_reach(base, run[-1])}"
                                for base, run in zip(scratch, runs, strict=True))
            print(f"{name:<34} " + " ".join(f"{mean_std([r[e] for r in runs], 100):>12}"
                                            for e in range(further + 1)) + f" {catch_up:>30}")


def _epochs_to_reach(curve: list[float], level: float) -> str:
    """Epochs the new base fine-tuned from scratch needs to score `level` (">n" if it never does)."""
    return next((str(e) for e, score in enumerate(curve) if score >= level), f">{len(curve) - 1}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seed pairs")
    parser.add_argument("--steps", type=int, default=20, help="T of the transfer")
    parser.add_argument("--cases", default="mlp,cnn,lm")
    parser.add_argument("--further", type=int, default=5,
                        help="epochs of fine-tuning after the transfer (at most the case's own: 4 for lm)")
    parser.add_argument("--study", action="store_true", help="add the variants of the study")
    parser.add_argument("--quick", action="store_true", help="one seed pair, T=10, 2 further epochs")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.further = 1, 10, 2
    torch.set_num_threads(1)  # a shared machine: one core per benchmark
    cases = {"mlp": lambda: digits_case("mlp", pre_epochs=20, finetune_epochs=20),
             "cnn": lambda: digits_case("cnn", pre_epochs=5, finetune_epochs=5),
             "lm": lambda: lm_case(pre_steps=300, epoch_steps=50, finetune_epochs=4)}
    for name in args.cases.split(","):
        run_case(cases[name](), args)


if __name__ == "__main__":
    main()
