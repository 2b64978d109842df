"""Averaging checkpoints along one trajectory: uniform windows, LAWA, EMA, and sweeps.

Every method is planned first as plain data, a `Candidate`: which checkpoints (by index
into the ordered list) enter with which weights. Executing a candidate streams those
checkpoints through one float32 accumulator, so memory stays at one model plus the
checkpoint being read, whatever the window (O(model), not O(k x model)).

Only parameters are averaged. BatchNorm running statistics are re-estimated on data for
every averaged model (they are not averageable: the mean of statistics is not the
statistics of the mean); every other buffer is taken from the newest checkpoint of the
candidate's window.
"""

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import torch
from torch import nn

from trajx.engine.batches import Dataset
from trajx.engine.bn import reestimated_state
from trajx.engine.losses import CLASSES_OR_VALUES, Task
from trajx.engine.metrics import evaluate
from trajx.errors import Cancelled, NonFiniteLoss

Tensors = dict[str, torch.Tensor]
# load(index) -> the checkpoint at `index` of the ordered list (validated, any device)
Loader = Callable[[int], Tensors]


@dataclass(frozen=True)
class Candidate:
    """One averaged model to build: `weights[j]` for checkpoint `indices[j]` (oldest first)."""

    label: str
    indices: tuple[int, ...]
    weights: tuple[float, ...]
    params: dict[str, float | bool] = field(default_factory=dict, compare=False)

    @property
    def newest(self) -> int:
        return self.indices[-1]


def positions(count: int) -> tuple[int, ...]:
    """The steps of checkpoints that carry none: their positions 0 … count − 1 (one step apart)."""
    return tuple(range(count))


def check_steps(steps: Sequence[int], count: int) -> None:
    """ValueError unless `steps` gives each of `count` checkpoints a step, strictly increasing."""
    if len(steps) != count:
        raise ValueError(f"{len(steps)} steps for {count} checkpoints")
    for i, (before, after) in enumerate(pairwise(steps)):
        if after <= before:
            raise ValueError(f"steps must increase strictly along the list: checkpoints[{i}] is at step "
                             f"{before}, checkpoints[{i + 1}] at step {after}")


def uniform(count: int, last: int, steps: Sequence[int] | None = None) -> Candidate:
    """The plain mean of the newest `last` of `count` checkpoints.

    With `steps`, the window must be evenly spaced in steps (an uneven one would silently
    weigh some stretches of training more than others): ValueError naming the gap otherwise.
    """
    _check_window(count, last)
    indices = tuple(range(count - last, count))
    if steps is not None:
        check_steps(steps, count)
        gaps = {steps[j] - steps[i] for i, j in pairwise(indices)}
        if len(gaps) > 1:
            raise ValueError(f"the newest {last} checkpoints are unevenly spaced (steps "
                             f"{', '.join(str(steps[i]) for i in indices)}): a plain mean would weigh some "
                             "stretches of training more than others; use lawa with 'every' a multiple of "
                             "the spacing, or ema (which weighs each checkpoint by the steps it stands for)")
    return Candidate(f"uniform last={last}", indices, (1.0 / last,) * last, {"last": last})


def lawa(count: int, last: int, every: int, steps: Sequence[int] | None = None) -> Candidate:
    """LAWA: the plain mean of `last` checkpoints `every` steps apart, ending at the newest.

    `steps` (default: positions) says at which optimizer step each checkpoint was saved;
    each of the steps newest − j·every must have a checkpoint, else ValueError naming
    the missing step and its neighbours.
    """
    steps = positions(count) if steps is None else steps
    check_steps(steps, count)
    if last < 1 or every < 1:
        raise ValueError(f"a window needs last >= 1 and every >= 1, got last={last}, every={every}")
    wanted = [steps[-1] - j * every for j in reversed(range(last))]
    if wanted[0] < steps[0]:
        raise ValueError(f"the window spans {(last - 1) * every + 1} steps (last={last}, every={every}), "
                         f"back to step {wanted[0]}, but the first checkpoint is at step {steps[0]}")
    index_of = {step: i for i, step in enumerate(steps)}
    missing = [step for step in wanted if step not in index_of]
    if missing:
        below = max(s for s in steps if s < missing[0])
        above = min(s for s in steps if s > missing[0])
        raise ValueError(f"lawa last={last} every={every} needs a checkpoint at step {missing[0]}; the "
                         f"nearest are at steps {below} and {above}: choose 'every' as a multiple of "
                         "the spacing of the saved checkpoints")
    indices = tuple(index_of[step] for step in wanted)
    return Candidate(f"lawa last={last} every={every}", indices, (1.0 / last,) * last,
                     {"last": last, "every": every})


def ema(count: int, decay: float, warmup: bool = False, bias_correction: bool = True,
        steps: Sequence[int] | None = None) -> Candidate:
    """The exponential moving average e ← β·e + (1 − β)·θ, β per optimizer step.

    `steps` (default: positions, one step apart) are the checkpoints' optimizer steps: a
    checkpoint stands for the steps since the previous one, so between checkpoints i − 1
    and i the average decays by D_i = Π β_t over those steps and checkpoint i enters with
    weight 1 − D_i (uneven spacing is handled, not refused). With `warmup` the decay of
    step t is min(β, (1 + t) / (10 + t)) (TensorFlow's ExponentialMovingAverage).

    Without `bias_correction` the average starts at the first checkpoint, which keeps
    Π_{i>0} D_i of the weight (β^(n−1): 37% for β = 0.98 over 50 checkpoints). With it
    (the default, as Adam's moments), the average starts at zero, the first checkpoint
    standing for as many steps as the gap after it, and the weights are divided by their
    sum 1 − Π D. Weights below 1e-12 are dropped (their checkpoints need not be read).
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
    steps = positions(count) if steps is None else steps
    check_steps(steps, count)
    log_d = [_log_decay(decay, warmup, before + 1, after) for before, after in pairwise(steps)]
    first = log_d[0] if bias_correction and log_d else 0.0
    entering = [_log_one_minus_exp(first) if bias_correction else 0.0] + [_log_one_minus_exp(x) for x in log_d]
    after = [sum(log_d[i:]) for i in range(count)]  # log Π_{j>i} D_j
    weights = [math.exp(e + a) for e, a in zip(entering, after)]
    total = sum(weights)
    kept = [(i, w / total) for i, w in enumerate(weights) if w / total >= 1e-12]
    total = sum(w for _, w in kept)
    label = f"ema decay={decay:g}" + (" warmup" if warmup else "") + ("" if bias_correction else " uncorrected")
    return Candidate(label, tuple(i for i, _ in kept), tuple(w / total for _, w in kept),
                     {"decay": decay, "warmup": warmup, "bias_correction": bias_correction})


def _log_decay(decay: float, warmup: bool, first: int, last: int) -> float:
    """Σ_{t=first}^{last} log β_t: β_t = β, or with `warmup` min(β, (1 + t)/(10 + t)).

    In closed form (the warm-up factors telescope into Gamma functions), so a gap of a
    million steps costs no more than one of ten.
    """
    if last < first:
        return 0.0
    if not warmup:
        return (last - first + 1) * math.log(decay)
    # The warm-up factor (1 + t)/(10 + t) grows with t; it is below β for t < switch.
    switch = max(0, math.ceil((10 * decay - 1) / (1 - decay)))
    while switch > 0 and switch / (9 + switch) >= decay:
        switch -= 1
    while (1 + switch) / (10 + switch) < decay:
        switch += 1
    total = 0.0
    end = min(last, switch - 1)
    if first <= end:  # Π_{t=first}^{end} (t + 1)/(t + 10)
        total += math.lgamma(end + 2) - math.lgamma(first + 1) - math.lgamma(end + 11) + math.lgamma(first + 10)
    start = max(first, switch)
    if start <= last:
        total += (last - start + 1) * math.log(decay)
    return total


def _log_one_minus_exp(x: float) -> float:
    """log(1 − eˣ) for x < 0, accurate when x is near 0."""
    return math.log(-math.expm1(x))


def _check_window(count: int, last: int) -> None:
    if not 1 <= last <= count:
        raise ValueError(f"a window of the newest last={last} checkpoints needs 1 <= last <= {count}, "
                         "the number of checkpoints")


class Accumulator:
    """A running weighted sum of state dicts in float32: Σ weight·state on `param_names`.

    Other entries are kept from the state added last (`others_from_first`: the first);
    nothing else is kept of a state, so memory is one model whatever the number added.
    """

    def __init__(self, param_names: Iterable[str], others_from_first: bool = False) -> None:
        self.names = set(param_names)
        self.others_from_first = others_from_first
        self.count = 0
        self._sum: Tensors = {}
        self._others: Tensors = {}
        self._dtypes: dict[str, torch.dtype] = {}

    def add(self, state: Mapping[str, torch.Tensor], weight: float) -> None:
        for name, tensor in state.items():
            if name in self.names and tensor.is_floating_point():
                self._dtypes[name] = tensor.dtype
                term = tensor.detach().to(torch.float32) * weight
                if name in self._sum:
                    self._sum[name] += term
                else:
                    self._sum[name] = term
            elif not (self.others_from_first and self.count):
                self._others[name] = tensor.detach().clone()
        self.count += 1

    def result(self, scale: float = 1.0) -> Tensors:
        """`scale` times the sum so far, each tensor back in its own dtype."""
        if self.count == 0:
            raise ValueError("nothing to average: no checkpoints")
        return {**self._others, **{n: (t * scale).to(self._dtypes[n]) for n, t in self._sum.items()}}


def weighted_average(states: Iterable[Mapping[str, torch.Tensor]], weights: Sequence[float],
                     param_names: Iterable[str]) -> Tensors:
    """Σ_j weights[j]·states[j] on `param_names`, other entries from the last state.

    `states` is consumed one at a time and not kept: at most the accumulator, the
    newest state's other entries and the state being added are alive.
    """
    accumulator = Accumulator(param_names)
    # Not zip(): its reused result tuple would keep the previous state alive while the
    # iterator builds the next one.
    for state in states:
        if accumulator.count == len(weights):
            raise ValueError(f"more states than the {len(weights)} weights")
        accumulator.add(state, weights[accumulator.count])
        del state
    if accumulator.count != len(weights):
        raise ValueError(f"{accumulator.count} states for {len(weights)} weights")
    return accumulator.result()


def score_of(metrics: Mapping[str, float]) -> tuple[float, ...]:
    """What choosing maximises: accuracy when there are classes, the lower loss breaking its
    ties (on a few hundred examples many candidates tie); else minus the loss."""
    return (metrics["accuracy"], -metrics["loss"]) if "accuracy" in metrics else (-metrics["loss"],)


@dataclass
class CandidateResult:
    """A candidate's metrics on held-out data (empty without it) and, when the choice is
    made on another split, its metrics there (`select_metrics`)."""

    candidate: Candidate
    metrics: dict[str, float]
    select_metrics: dict[str, float] | None = None

    def score(self) -> tuple[float, ...]:
        """What choosing maximises, on the choosing split."""
        return score_of(self.metrics if self.select_metrics is None else self.select_metrics)


@dataclass
class AverageResult:
    """The best candidate (the only one without a sweep), its state and every candidate's metrics."""

    best: CandidateResult
    state: Tensors
    curve: list[CandidateResult]


def nested_windows(candidates: Sequence[Candidate]) -> bool:
    """Whether `candidates` are plain means of nested windows ending at one checkpoint (a
    sweep of uniform or LAWA windows): then one pass over the longest builds them all."""
    if len(candidates) < 2 or any(len(set(c.weights)) != 1 for c in candidates):
        return False
    ordered = sorted(candidates, key=lambda c: len(c.indices))
    return all(big.indices[len(big.indices) - len(small.indices):] == small.indices
               for small, big in pairwise(ordered))


def build_order(candidates: Sequence[Candidate]) -> list[int]:
    """The positions of `candidates` in the order `Averager.run` builds them: nested windows
    smallest first (one pass), any others as listed. A resumed run continues along it."""
    if nested_windows(candidates):
        return sorted(range(len(candidates)), key=lambda i: len(candidates[i].indices))
    return list(range(len(candidates)))


@dataclass(frozen=True)
class Finished:
    """A candidate an interrupted run built and scored: its result, and its state (BatchNorm
    re-estimated) if that was kept; without it the state is rebuilt only where it is needed."""

    result: CandidateResult
    state: Tensors | None = None


def _rank(position: int, result: CandidateResult) -> tuple[tuple[float, ...], int]:
    """What the best candidate maximises: its score; among equals, the one listed first."""
    return result.score(), -position


class Averager:
    """Builds and evaluates averaged models of one trajectory on one working model.

    `bn_inputs` are the input batches BatchNorm statistics are re-estimated on;
    `eval_data` (optional) is the held-out set candidates are scored on; `select_data`
    (optional) the held-out set a sweep chooses on instead of `eval_data`.
    """

    def __init__(self, model: nn.Module, load: Loader, bn_inputs: Sequence[torch.Tensor],
                 eval_data: Dataset | None = None, batch_size: int = 512,
                 device: torch.device | str = "cpu", select_data: Dataset | None = None,
                 task: Task = CLASSES_OR_VALUES) -> None:
        self.device = torch.device(device)
        self.task = task
        self.model = model.to(self.device)
        self.load = load
        self.bn_inputs = [b.to(self.device) for b in bn_inputs]
        self.eval_data = eval_data
        self.select_data = select_data
        self.batch_size = batch_size
        self.param_names = [n for n, _ in model.named_parameters()]

    def build(self, candidate: Candidate) -> Tensors:
        """The averaged state of `candidate` with BatchNorm re-estimated, on CPU."""
        return self.finish(self._average(candidate))

    def _average(self, candidate: Candidate) -> Tensors:
        states = (self.load(i) for i in candidate.indices)
        return weighted_average(states, candidate.weights, self.param_names)

    def _nested_averages(self, ordered: Sequence[Candidate]) -> Iterator[Tensors]:
        """The averages of nested windows (`ordered` smallest first) in one pass that
        reads each checkpoint once, newest first, through one running sum."""
        accumulator = Accumulator(self.param_names, others_from_first=True)  # buffers: newest
        pending = iter(ordered)
        candidate = next(pending, None)
        for index in reversed(ordered[-1].indices):
            accumulator.add(self.load(index), 1.0)
            while candidate is not None and len(candidate.indices) == accumulator.count:
                yield accumulator.result(scale=1.0 / accumulator.count)
                candidate = next(pending, None)

    def _averages(self, candidates: Sequence[Candidate], order: Sequence[int]) -> Callable[[int], Tensors]:
        """average(rank): the (raw) average of candidate `order[rank]`, ranks ascending. Nested
        windows share one pass: reaching a rank reads the checkpoints of the ranks skipped."""
        if not nested_windows(candidates):
            return lambda rank: self._average(candidates[order[rank]])
        averages = self._nested_averages([candidates[i] for i in order])
        taken = -1  # the last rank taken from the pass (none is kept: memory stays one model)

        def average(rank: int) -> Tensors:
            nonlocal taken
            for _ in range(rank - taken - 1):
                next(averages)
            taken = rank
            return next(averages)

        return average

    def finish(self, state: Tensors) -> Tensors:
        """`state` loaded into the model, BatchNorm re-estimated; the full state on CPU."""
        return reestimated_state(self.model, state, self.bn_inputs)

    @property
    def bn_samples(self) -> int:
        """How many samples BatchNorm statistics are re-estimated on."""
        return sum(len(batch) for batch in self.bn_inputs)

    def score(self, state: Tensors | None = None, split: str = "eval_data") -> dict[str, float]:
        """Metrics of `state` (default: what the model holds now) on `split` (`eval_data` or
        `select_data`); {} without that split."""
        data = self.eval_data if split == "eval_data" else self.select_data
        if data is None:
            return {}
        if state is not None:
            self.model.load_state_dict(state)
        metrics = evaluate(self.model, data, self.batch_size, self.device, self.task)
        if not all(math.isfinite(v) for v in metrics.values()):
            raise NonFiniteLoss(f"{split} loss is {metrics['loss']}", where=split)
        return metrics

    def run(self, candidates: Sequence[Candidate],
            on_candidate: Callable[[CandidateResult, Tensors], None] | None = None,
            should_cancel: Callable[[], bool] | None = None, finished: Sequence[Finished] = (),
            on_restored: Callable[[CandidateResult, Tensors], None] | None = None) -> AverageResult:
        """Build and score every candidate; keep the best (the first listed on ties).

        Candidates are built in `build_order`: nested windows (see `nested_windows`)
        smallest first in one pass over the checkpoints, others one by one; the curve keeps
        the order of `candidates`. The choice is made on select_data when there is one, else
        on eval_data; without either only one candidate can be chosen from, so `candidates`
        must hold exactly one. `on_candidate` sees each result and state before the next is
        built (it may write the state out). Raises Cancelled between candidates.

        A resumed run passes what an interrupted one finished: the first candidates of
        `build_order`, which are not built or scored again. A state they lack is rebuilt
        (averaged, BatchNorm re-estimated: the same bits) only where it is needed: for the
        best of them, and for each of them if `on_restored` wants their states.
        """
        if not candidates:
            raise ValueError("no candidates to average")
        if self.eval_data is None and self.select_data is None and len(candidates) > 1:
            raise ValueError("choosing among several candidates needs eval or select data")
        order = build_order(candidates)
        if len(finished) > len(order) or any(done.result.candidate != candidates[position]
                                             for done, position in zip(finished, order)):
            raise ValueError("finished candidates must be the first ones of build_order(candidates)")
        average = self._averages(candidates, order)
        leader = max(range(len(finished)), key=lambda r: _rank(order[r], finished[r].result), default=None)
        best: tuple[int, CandidateResult, Tensors] | None = None
        results: dict[int, CandidateResult] = {}
        for rank, position in enumerate(order):
            if rank < len(finished):
                result, state = finished[rank].result, finished[rank].state
                if state is None and (rank == leader or on_restored is not None):
                    state = self.finish(average(rank))
                if on_restored is not None:
                    on_restored(result, state)
            else:
                if should_cancel is not None and should_cancel():
                    raise Cancelled("averaging cancelled between candidates")
                state = self.finish(average(rank))
                selected = self.score(split="select_data") if self.select_data is not None else None
                result = CandidateResult(candidates[position], self.score(), selected)
                if on_candidate is not None:
                    on_candidate(result, state)
            results[position] = result
            if best is None or _rank(position, result) > _rank(*best[:2]):
                best = (position, result, state)
            del state
        return AverageResult(best[1], best[2], [results[i] for i in range(len(candidates))])
