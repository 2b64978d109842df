"""Averaging and alignment benchmark (prints tables, asserts nothing).

    .venv/bin/python -m bench.bench_average            # from the repository root; 1.5-8 min on 2 busy CPU cores
    .venv/bin/python -m bench.bench_average --seeds 5

1. Averaging quality: scikit-learn digits (1400 train / 397 held out), the zoo `mlp` and
   a `cnn` with BatchNorm, SGD with momentum saving 40 evenly spaced checkpoints, at a
   constant learning rate and with cosine decay to zero (training on 1200 digits, 200 kept
   for validation). Held-out accuracy of the last checkpoint against uniform (last 5), LAWA
   (last 3, every 2), EMA (β = 0.8 per checkpoint) and a uniform window chosen on the
   validation split by a sweep, at mid-training (the first 20 checkpoints) and at the end
   (all 40), BatchNorm re-estimated for every average. Mean ± std over seeds.
2. Alignment: loss and accuracy barriers of plain against aligned (weight matching,
   activation matching) interpolation between two independently trained MLPs, by width.
3. Averaged transfers: FGMT (T = 20) last and best step against the average of its last 5 steps.
4. Jobs: seconds and extra peak memory (RSS above the level before the job) of average and
   align jobs through their executors, and averaging windows of 5 vs 40 checkpoints of a
   ~10 MB model (streaming: memory must not grow with the window).
5. Merges (`--only merges`, ~1.5 min): four independently trained MLPs merged by the merge
   executor without alignment, onto models[0], by MergeMany, with and without REPAIR; the
   onto-models[0] merge against a hand-written Git Re-Basin weight matching and mean. A
   greedy soup of six fine-tunes (chosen on 200 digits, scored on 397) against a
   hand-written greedy soup.
6. BatchNorm (`--only bn`): the accuracy gap between two re-estimations of one model
   (batches drawn with two seeds) at 5, 20 and the default 40 batches of 128.
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from tests.support.engine_setups import digits  # 1400 train, 397 held out, as bench_engine
from trajx.engine.batches import Dataset
from trajx.engine.bn import reestimate_batch_norm
from trajx.engine.merging.alignment import (
    PathEvaluator,
    activation_matching,
    find_probes,
    matched_parameters,
    weight_matching,
)
from trajx.engine.merging.averaging import Averager, Candidate, ema, lawa, uniform
from trajx.engine.metrics import evaluate
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.spec import apply_permutation
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import transfer
from trajx.engine.zoo import build_model, example_input, init_state_dict
from trajx.executors import RunContext, executor_for
from trajx.executors.common import draw_batches
from trajx.io import load_tensors, save_tensors
from trajx.job_spec import BN_BATCHES, RunParams, parse_job_spec
from trajx.resources import current_memory_bytes, peak_memory_bytes, reset_peak_memory

MB = 2**20
MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"
CPU = torch.device("cpu")
MLP = ("mlp", {"in_features": 64, "hidden": [256, 256], "num_classes": 10})
CNN = ("cnn", {"in_channels": 1, "image_size": 8, "channels": [32, 32], "fc": [64],
               "batchnorm": True, "pooling": "flatten"})
CHECKPOINTS = 40
AVERAGE_LAST = 5


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def sgd_run(arch, train: Dataset, seed: int, epochs: int, lr: float, decay: bool,
            checkpoints: int = CHECKPOINTS) -> list[dict[str, torch.Tensor]]:
    """SGD (momentum 0.9, batch 32) from the zoo's init `seed`; `checkpoints` evenly spaced
    states, the last one at the end. `decay`: cosine learning rate from `lr` to 0."""
    model = build_model(*arch)
    model.load_state_dict(init_state_dict(*arch, seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    per_epoch = math.ceil(len(train) / 32)
    total = epochs * per_epoch
    every = total // checkpoints
    generator = torch.Generator().manual_seed(seed)
    saved, step = [], 0
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), 32):
            if decay:
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            batch = order[start:start + 32]
            loss = nn.functional.cross_entropy(model(train.inputs[batch]), train.targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % every == 0 and len(saved) < checkpoints:
                saved.append(state(model))
    return saved


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


METHODS: dict[str, Callable[[int], Candidate]] = {
    "uniform last 5": lambda n: uniform(n, 5),
    "LAWA last 3 every 2": lambda n: lawa(n, 3, 2),
    "EMA β=0.8": lambda n: ema(n, 0.8),
}
SWEEP = (1, 2, 3, 5, 10, 20)
CHOSEN = "uniform, k on validation"


def averaging_quality(seeds: int) -> None:
    rows = []
    for label, arch, images, epochs, lr in (("MLP 256-256", MLP, False, 10, 0.05),
                                            ("CNN+BN 32-32", CNN, True, 6, 0.05)):
        data, test = digits(images)
        # 1200 to train on, 200 to choose a window on, the 397 held out to report.
        train, validation = Dataset(data.inputs[:1200], data.targets[:1200]), \
            Dataset(data.inputs[1200:], data.targets[1200:])
        bn_inputs = [train.inputs[i:i + 128] for i in range(0, 640, 128)]
        for decay in (False, True):
            results: dict[tuple[str, str], list[float]] = {}
            for seed in range(seeds):
                run = sgd_run(arch, train, seed, epochs, lr, decay)
                for when, count in (("mid", CHECKPOINTS // 2), ("end", CHECKPOINTS)):
                    averager = Averager(build_model(*arch), run.__getitem__, bn_inputs, test)
                    results.setdefault((when, "last checkpoint"), []).append(
                        averager.score(run[count - 1])["accuracy"])
                    for name, plan in METHODS.items():
                        averager.build(plan(count))
                        results.setdefault((when, name), []).append(averager.score()["accuracy"])
                    chooser = Averager(build_model(*arch), run.__getitem__, bn_inputs, validation)
                    best = chooser.run([uniform(count, k) for k in SWEEP]).state
                    results.setdefault((when, CHOSEN), []).append(averager.score(best)["accuracy"])
            for when in ("mid", "end"):
                rows.append([label, "cosine" if decay else "constant", when,
                             *(mean_std(results[(when, name)]) for name in ("last checkpoint", *METHODS, CHOSEN))])
    print_table(f"Averaging: held-out accuracy % on digits (40 checkpoints, mean ± std over {seeds} seeds)",
                ["model", "lr", "at", "last checkpoint", *METHODS, CHOSEN], rows)


def alignment_barriers(seeds: int) -> None:
    train, test = digits(False)
    bn_inputs = [train.inputs[i:i + 128] for i in range(0, 640, 128)]
    rows = []
    for width in (64, 512, 1024):
        arch = ("mlp", {"in_features": 64, "hidden": [width, width], "num_classes": 10})
        model = build_model(*arch)
        spec = derive_spec(model, example_input(*arch))
        names = matched_parameters(model, spec)
        barriers: dict[str, list[tuple[float, float]]] = {}
        for seed in range(seeds):
            a = sgd_run(arch, train, 2 * seed, 5, 0.05, True, checkpoints=1)[-1]
            b = sgd_run(arch, train, 2 * seed + 1, 5, 0.05, True, checkpoints=1)[-1]
            evaluator = PathEvaluator(model, bn_inputs, test, 512, CPU)
            by_weights = apply_permutation(spec, weight_matching(spec, a, b, names).perm, b)
            model.load_state_dict(a)
            probes = find_probes(model, spec, train.inputs[:64], torch.Generator().manual_seed(0))
            by_activations = apply_permutation(spec, activation_matching(
                model, spec, a, b, [train.inputs[i:i + 256] for i in range(0, 1400, 256)], probes), b)
            for path, other in (("plain", b), ("weights", by_weights), ("activations", by_activations)):
                curve = evaluator.curve(a, other)
                barriers.setdefault(path, []).append((curve.barrier("loss"), curve.barrier("accuracy")))
        row = [f"MLP {width}-{width}"]
        for path in ("plain", "weights", "activations"):
            losses = [b[0] for b in barriers[path]]
            accuracies = [b[1] for b in barriers[path]]
            row.append(f"{statistics.mean(losses):.3f} / {100 * statistics.mean(accuracies):.1f}")
        rows.append(row)
    print_table(f"Alignment: loss barrier / accuracy barrier (points) between two independent runs "
                f"(digits, 11 α, BN re-estimated; mean over {seeds} pairs)",
                ["model", "plain", "weight matching", "activation matching"], rows)


def averaged_transfers(seeds: int) -> None:
    rows = []
    for label, arch, images, epochs, lr in (("MLP 256-256", MLP, False, 20, 0.005),
                                            ("CNN+BN 32-32", CNN, True, 3, 0.005)):
        train, test = digits(images)
        model = build_model(*arch)
        spec = derive_spec(model, example_input(*arch))
        source = sgd_run(arch, train, 0, epochs, lr, False, checkpoints=1)
        source = [init_state_dict(*arch, 0), source[-1]]
        results: dict[str, list[float]] = {}
        for seed in range(1, seeds + 1):
            params = TransferOptions(steps=20, batch_size=128, device="cpu")
            started = time.perf_counter()
            target = transfer(build_model(*arch), spec, source, [init_state_dict(*arch, seed)], train,
                              params, eval_data=test, average_last=AVERAGE_LAST).targets[0]
            results.setdefault("seconds", []).append(time.perf_counter() - started)
            results.setdefault("last", []).append(target.steps[-1]["accuracy"])
            results.setdefault("best", []).append(max(s["accuracy"] for s in target.steps))
            results.setdefault("average", []).append(target.average_metrics["accuracy"])
        rows.append([label, *(mean_std(results[key]) for key in ("last", "best", "average")),
                     f"{statistics.mean(results['seconds']):.1f}"])
    print_table(f"Averaged transfers: FGMT T=20 held-out accuracy % (mean ± std over {seeds} targets)",
                ["model", "last step", "best step", f"outputs.average last {AVERAGE_LAST}", "seconds"], rows)


def _job(document: dict, directory: Path, out: Path | None = None) -> tuple[dict, float, float]:
    spec = parse_job_spec(document)
    out = out or Path(tempfile.mkdtemp(dir=directory))
    before = current_memory_bytes(CPU)
    reset_peak_memory(CPU)
    started = time.perf_counter()
    manifest = executor_for(spec.kind)(spec, Path, out, RunContext())
    seconds = time.perf_counter() - started
    return manifest.summary, seconds, (peak_memory_bytes(CPU) - before) / MB


def jobs(directory: Path) -> None:
    train, test = digits(False)
    for name, data in (("train", train), ("test", test)):
        save_tensors(directory / f"{name}.safetensors", {"inputs": data.inputs, "targets": data.targets})
    run = sgd_run(MLP, train, 0, 20, 0.05, False)
    refs = []
    for index, checkpoint in enumerate(run):
        refs.append(str(directory / f"mlp{index}.safetensors"))
        save_tensors(Path(refs[-1]), checkpoint)
    other = sgd_run(MLP, train, 1, 20, 0.05, False, checkpoints=1)[-1]
    save_tensors(directory / "other.safetensors", other)
    arch = {"name": MLP[0], "config": MLP[1]}
    data = {"train_data": str(directory / "train.safetensors"), "eval_data": str(directory / "test.safetensors"),
            "params": {"device": "cpu"}}
    average = {"kind": "average", "arch": arch, "checkpoints": refs, **data}
    align = {"kind": "align", "arch": arch, "model_a": refs[-1], "model_b": str(directory / "other.safetensors"),
             **data, "outputs": {"merged": True}}
    cases = [
        ("average uniform last 10", average | {"method": {"name": "uniform", "last": 10}}),
        ("average lawa last 5 every 2", average | {"method": {"name": "lawa", "last": 5, "every": 2}}),
        ("average ema β=0.9 warmup", average | {"method": {"name": "ema", "decay": 0.9, "warmup": True}}),
        ("average uniform sweep last 1,2,5,10,20,40",
         average | {"method": {"name": "uniform", "last": 10}, "sweep": {"last": [1, 2, 5, 10, 20, 40]}}),
        ("align weights (+ merged)", align | {"method": "weights"}),
        ("align activations (+ merged)", align | {"method": "activations"}),
    ]
    rows = []
    for label, document in cases:
        summary, seconds, extra = _job(document, directory)
        if summary.get("best") is not None:
            result = f"acc {100 * summary['best']['metrics']['accuracy']:.1f} ({summary['best']['label']})"
        else:
            result = (f"barrier {summary['plain_loss_barrier']:.3f} → {summary['aligned_loss_barrier']:.3f}, "
                      f"merged acc {100 * summary['merged_accuracy']:.1f}")
        rows.append([label, result, f"{seconds:.2f}", f"{extra:.0f}"])

    # Streaming: a ~10 MB model, windows of 5 and 40 checkpoints.
    big = ("mlp", {"in_features": 64, "hidden": [1536, 1536], "num_classes": 10})
    init = init_state_dict(*big, 0)
    size = sum(t.numel() * t.element_size() for t in init.values()) / MB
    generator = torch.Generator().manual_seed(0)
    big_refs = []
    for index in range(CHECKPOINTS):
        big_refs.append(str(directory / f"big{index}.safetensors"))
        save_tensors(Path(big_refs[-1]), {n: t + 0.01 * torch.randn(t.shape, generator=generator)
                                          if t.is_floating_point() else t for n, t in init.items()})
    del init
    for last in (5, 40):
        document = {"kind": "average", "arch": {"name": big[0], "config": big[1]}, "checkpoints": big_refs,
                    "method": {"name": "uniform", "last": last}, **data}
        _, seconds, extra = _job(document, directory)
        rows.append([f"average uniform last {last}, {size:.1f} MB model", f"window {last * size:.0f} MB",
                     f"{seconds:.2f}", f"{extra:.0f}"])
    print_table("Jobs through their executors (MLP 256-256 on digits, 40 checkpoints; CPU)",
                ["job", "result", "seconds", "extra peak RSS MB"], rows)


def bn_agreement(seeds: int) -> None:
    """Two re-estimations of one model's BatchNorm statistics (batches drawn with seeds 0 and
    1, as `params.seed` would): how far apart their held-out accuracies are, by batch count."""
    rows = []
    bn_mlp = ("mlp", {**MLP[1], "norm": "batchnorm"})
    for label, arch, images in (("MLP+BN 256-256", bn_mlp, False), ("CNN+BN 32-32", CNN, True)):
        train, test = digits(images)
        model = build_model(*arch)
        # Five checkpoints along each constant-lr run: mid-training BN statistics move most.
        runs = [s for seed in range(seeds) for s in sgd_run(arch, train, seed, 5, 0.05, False, checkpoints=5)]
        for batches in (5, 20, BN_BATCHES):
            gaps = []
            for state in runs:
                accuracies = []
                for draw in (0, 1):
                    inputs = draw_batches(train, RunParams(seed=draw), batches, CPU)
                    model.load_state_dict(state)
                    reestimate_batch_norm(model, inputs)
                    accuracies.append(evaluate(model, test, 512, CPU)["accuracy"])
                gaps.append(abs(accuracies[0] - accuracies[1]))
            rows.append([label, f"{batches} x 128", f"{100 * statistics.mean(gaps):.2f}", f"{100 * max(gaps):.2f}"])
    print_table(f"BatchNorm: accuracy gap (points; one digit is 0.25) between two re-estimations of one "
                f"model (digits, 5 checkpoints of a 5-epoch run, lr 0.05, x {seeds} seeds)",
                ["model", "bn batches", "mean gap", "max gap"], rows)


def reference_weight_matching(a: dict, b: dict, seed: int = 0) -> list[np.ndarray]:
    """Git Re-Basin weight matching for the zoo's 2-hidden-layer MLP, written out by hand:
    perms[l][i] = the B unit placed at A's unit i of hidden layer l."""
    rng = np.random.default_rng(seed)
    w = {k: v.double().numpy() for k, v in a.items()}
    v = {k: t.double().numpy() for k, t in b.items()}
    width = w["blocks.0.fc.bias"].shape[0]
    perms = [np.arange(width), np.arange(width)]
    for _ in range(100):
        changed = False
        for layer in rng.permutation(2):
            fc, nxt = f"blocks.{layer}.fc", "blocks.1.fc" if layer == 0 else "head"
            b_in = v[f"{fc}.weight"] if layer == 0 else v[f"{fc}.weight"][:, perms[0]]
            b_out = v[f"{nxt}.weight"] if layer == 1 else v[f"{nxt}.weight"][perms[1]]
            cost = (w[f"{fc}.weight"] @ b_in.T + np.outer(w[f"{fc}.bias"], v[f"{fc}.bias"])
                    + w[f"{nxt}.weight"].T @ b_out)
            old = cost[np.arange(width), perms[layer]].sum()
            _, columns = linear_sum_assignment(cost, maximize=True)
            if cost[np.arange(width), columns].sum() > old + 1e-12:
                perms[layer], changed = columns, True
        if not changed:
            return perms
    return perms


def reference_permuted(b: dict, perms: list[np.ndarray]) -> dict:
    """B with the hand-written matching's permutations applied (rows and the next layer's columns)."""
    out = dict(b)
    for layer, perm in enumerate(perms):
        fc, nxt = f"blocks.{layer}.fc", "blocks.1.fc" if layer == 0 else "head"
        out[f"{fc}.weight"], out[f"{fc}.bias"] = out[f"{fc}.weight"][perm], out[f"{fc}.bias"][perm]
        out[f"{nxt}.weight"] = out[f"{nxt}.weight"][:, perm]
    return out


def reference_greedy_soup(states: list[dict], model: nn.Module, select: Dataset) -> tuple[list[int], dict]:
    """Wortsman et al.'s greedy soup, written out: rank on `select`, add best first if not worse."""
    def accuracy(state: dict) -> tuple[float, float]:  # accuracy, ties to the lower loss
        model.load_state_dict(state)
        metrics = evaluate(model.eval(), select, 512, CPU)
        return metrics["accuracy"], -metrics["loss"]

    def mean(indices: list[int]) -> dict:
        return {n: sum(states[i][n].double() for i in indices).div(len(indices)).float() for n in states[0]}

    scores = [accuracy(s) for s in states]
    ranking = sorted(range(len(states)), key=lambda i: (-scores[i][0], -scores[i][1], i))
    soup, best = [ranking[0]], scores[ranking[0]]
    for index in ranking[1:]:
        score = accuracy(mean([*soup, index]))
        if score >= best:
            soup, best = [*soup, index], score
    return soup, mean(soup)


def _max_diff(first: dict, second: dict) -> float:
    return max(float((first[n].double() - second[n].double()).abs().max()) for n in first)


def merges(directory: Path, models: int = 4) -> None:
    """Merges of `models` independently trained MLPs (digits; 1200 to train on, 200 to choose
    on, 397 held out to score on), through the merge executor, and the reference check."""
    data, test = digits(False)
    train, select = Dataset(data.inputs[:1200], data.targets[:1200]), Dataset(data.inputs[1200:], data.targets[1200:])
    for name, split in (("train", train), ("select", select), ("test", test)):
        save_tensors(directory / f"{name}.safetensors", {"inputs": split.inputs, "targets": split.targets})
    arch = {"name": MLP[0], "config": MLP[1]}
    runs = [sgd_run(MLP, train, seed, 5, 0.05, True, checkpoints=1)[-1] for seed in range(models)]
    refs = []
    for index, state in enumerate(runs):
        refs.append(str(directory / f"seed{index}.safetensors"))
        save_tensors(Path(refs[-1]), state)
    base = {"kind": "merge", "arch": arch, "models": refs, "train_data": str(directory / "train.safetensors"),
            "eval_data": str(directory / "test.safetensors"), "params": {"device": "cpu"}}
    rows = []
    model = build_model(*MLP)
    for label, extra in (("no alignment", {"align": "none"}), ("onto models[0]", {}),
                         ("onto models[0] + REPAIR", {"repair": True}), ("MergeMany", {"align": "mean"}),
                         ("MergeMany + REPAIR", {"align": "mean", "repair": True})):
        out = Path(tempfile.mkdtemp(dir=directory))
        summary, seconds, _ = _job(base | extra, directory, out)
        check = ""
        if extra == {}:
            # The reference: hand-written weight matching of each model onto models[0], plain mean.
            aligned = [runs[0], *(reference_permuted(b, reference_weight_matching(runs[0], b)) for b in runs[1:])]
            expected = {n: sum(s[n].double() for s in aligned).div(models).float() for n in runs[0]}
            model.load_state_dict(expected)
            accuracy = evaluate(model.eval(), test, 512, CPU)["accuracy"]
            merged = load_tensors(out / "merged.safetensors", "merged")
            check = (f"max abs Δθ {_max_diff(merged, expected):.1e}, "
                     f"acc {100 * accuracy:.1f} vs {100 * summary['merged']['accuracy']:.1f}")
        barrier = statistics.mean(b["loss_barrier"] for b in summary["barriers"])
        rows.append([label, f"{100 * summary['mean_input_accuracy']:.1f}", f"{100 * summary['merged']['accuracy']:.1f}",
                     f"{summary['merged']['loss']:.3f}", f"{barrier:.3f}", f"{seconds:.1f}", check])
    print_table(f"Merging {models} independently trained MLPs 256-256 (digits, held-out accuracy %, CPU)",
                ["merge", "inputs (mean)", "merged", "merged loss", "barrier input→merge (mean)", "seconds",
                 "independent reference"], rows)

    # Greedy soup over fine-tunes of one pre-trained model: chosen on `select`, scored on `test`.
    pretrained = sgd_run(MLP, Dataset(train.inputs[:600], train.targets[:600]), 0, 5, 0.05, True, checkpoints=1)[-1]
    finetunes = []
    for index, lr in enumerate((0.005, 0.01, 0.02, 0.05, 0.1, 0.2)):
        finetunes.append(finetune(pretrained, train, seed=index, lr=lr))
        save_tensors(directory / f"ft{index}.safetensors", finetunes[-1])
    out = Path(tempfile.mkdtemp(dir=directory))
    soup_spec = base | {"models": [str(directory / f"ft{i}.safetensors") for i in range(len(finetunes))],
                        "align": "none", "soup": "greedy", "select_data": str(directory / "select.safetensors")}
    summary, seconds, _ = _job(soup_spec, directory, out)
    soup = summary["soup"]
    ingredients, expected = reference_greedy_soup(finetunes, model, select)
    model.load_state_dict(expected)
    reference_accuracy = evaluate(model.eval(), test, 512, CPU)["accuracy"]
    souped = load_tensors(out / "soup.safetensors", "soup")
    rows = [["best single (ranked on select)", f"{100 * soup['best_single']['select_data']['accuracy']:.1f}",
             f"{100 * soup['best_single']['eval_data']['accuracy']:.1f}", "1", ""],
            ["uniform soup", f"{100 * soup['uniform_soup']['select_data']['accuracy']:.1f}",
             f"{100 * soup['uniform_soup']['eval_data']['accuracy']:.1f}", str(len(finetunes)), ""],
            ["greedy soup", f"{100 * soup['metrics']['select_data']['accuracy']:.1f}",
             f"{100 * soup['metrics']['eval_data']['accuracy']:.1f}", str(len(soup["ingredients"])),
             (f"ingredients {soup['ingredients']} vs {ingredients}, max abs Δθ {_max_diff(souped, expected):.1e}, "
              f"acc {100 * reference_accuracy:.1f}")]]
    print_table(f"Soups of {len(finetunes)} fine-tunes of one MLP (lr 0.005-0.2; chosen on 200 digits, scored "
                f"on 397; {seconds:.1f} s)", ["model", "select acc", "held-out acc", "models", "independent reference"],
                rows)


def finetune(start: dict, train: Dataset, seed: int, lr: float, epochs: int = 2) -> dict:
    """SGD (momentum 0.9, batch 32, constant lr) from `start`, data order from `seed`."""
    model = build_model(*MLP)
    model.load_state_dict(start)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(100 + seed)
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for begin in range(0, len(train), 32):
            batch = order[begin:begin + 32]
            loss = nn.functional.cross_entropy(model(train.inputs[batch]), train.targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return state(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=["merges", "bn"], help="run one new section alone")
    args = parser.parse_args()
    if MMAP_THRESHOLD not in os.environ:
        # glibc raises its mmap threshold after large frees, then serves big tensors from the
        # heap, whose freed pages RSS keeps: peak RSS would measure fragmentation, not use.
        os.execve(sys.executable, [sys.executable, "-m", __spec__.name, *sys.argv[1:]],
                  {**os.environ, MMAP_THRESHOLD: "65536"})
    torch.set_num_threads(1)
    started = time.perf_counter()
    if args.only in (None, "merges"):
        with tempfile.TemporaryDirectory() as directory:
            merges(Path(directory))
    if args.only in (None, "bn"):
        bn_agreement(args.seeds)
    if args.only is not None:
        print(f"\n{time.perf_counter() - started:.0f} s in all")
        return
    with tempfile.TemporaryDirectory() as directory:
        jobs(Path(directory))
    for section in (averaging_quality, alignment_barriers, averaged_transfers):
        section_started = time.perf_counter()
        section(args.seeds)
        print(f"({time.perf_counter() - section_started:.0f} s)")
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
