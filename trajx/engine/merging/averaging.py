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
from trajx.engine.bn import reestimate_batch_norm
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


def uniform(count: int, last: int) -> Candidate:
    """The plain mean of the newest `last` of `count` checkpoints."""
    _check_window(count, last, 1)
    indices = tuple(range(count - last, count))
    return Candidate(f"uniform last={last}", indices, (1.0 / last,) * last, {"last": last})


def lawa(count: int, last: int, every: int) -> Candidate:
    """LAWA: the plain mean of `last` checkpoints spaced `every` apart, ending at the newest."""
    _check_window(count, last, every)
    indices = tuple(range(count - 1 - (last - 1) * every, count, every))
    return Candidate(f"lawa last={last} every={every}", indices, (1.0 / last,) * last,
                     {"last": last, "every": every})


def ema(count: int, decay: float, warmup: bool = False) -> Candidate:
    """The exponential moving average e ← β·e + (1 − β)·θ over all `count` checkpoints.

    It starts at the first checkpoint; with `warmup` the decay of update t is
    min(β, (1 + t) / (10 + t)) (TensorFlow's ExponentialMovingAverage), so early
    checkpoints are not frozen in by a large β. The weights are computed in closed form;
    those below 1e-12 are dropped (their checkpoints need not be read).
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
    weights = [1.0]
    for t in range(1, count):
        beta = min(decay, (1 + t) / (10 + t)) if warmup else decay
        weights = [w * beta for w in weights] + [1.0 - beta]
    kept = [(i, w) for i, w in enumerate(weights) if w >= 1e-12]
    total = sum(w for _, w in kept)
    label = f"ema decay={decay:g}" + (" warmup" if warmup else "")
    return Candidate(label, tuple(i for i, _ in kept), tuple(w / total for _, w in kept),
                     {"decay": decay, "warmup": warmup})


def _check_window(count: int, last: int, every: int) -> None:
    if last < 1 or every < 1:
        raise ValueError(f"a window needs last >= 1 and every >= 1, got last={last}, every={every}")
    span = (last - 1) * every + 1
    if span > count:
        raise ValueError(f"the window spans {span} checkpoints (last={last}, every={every}) "
                         f"but the list holds {count}")


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


@dataclass
class CandidateResult:
    """A candidate's metrics on held-out data (empty without it)."""

    candidate: Candidate
    metrics: dict[str, float]

    def score(self) -> float:
        # Accuracy when there are classes, else the lowest loss.
        return self.metrics["accuracy"] if "accuracy" in self.metrics else -self.metrics["loss"]


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


class Averager:
    """Builds and evaluates averaged models of one trajectory on one working model.

    `bn_inputs` are the input batches BatchNorm statistics are re-estimated on;
    `eval_data` (optional) is the held-out set candidates are scored on.
    """

    def __init__(self, model: nn.Module, load: Loader, bn_inputs: Sequence[torch.Tensor],
                 eval_data: Dataset | None = None, batch_size: int = 512,
                 device: torch.device | str = "cpu", task: Task = CLASSES_OR_VALUES) -> None:
        self.device = torch.device(device)
        self.task = task
        self.model = model.to(self.device)
        self.load = load
        self.bn_inputs = [b.to(self.device) for b in bn_inputs]
        self.eval_data = eval_data
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

    def finish(self, state: Tensors) -> Tensors:
        """`state` loaded into the model, BatchNorm re-estimated; the full state on CPU."""
        self.model.load_state_dict(state)
        reestimate_batch_norm(self.model, self.bn_inputs)
        return {n: t.detach().to("cpu", copy=True) for n, t in self.model.state_dict().items()}

    def score(self, state: Tensors | None = None) -> dict[str, float]:
        """Held-out metrics of `state` (default: what the model holds now); {} without eval data."""
        if self.eval_data is None:
            return {}
        if state is not None:
            self.model.load_state_dict(state)
        metrics = evaluate(self.model, self.eval_data, self.batch_size, self.device, self.task)
        if not all(math.isfinite(v) for v in metrics.values()):
            raise NonFiniteLoss(f"eval loss is {metrics['loss']}", where="eval_data")
        return metrics

    def run(self, candidates: Sequence[Candidate],
            on_candidate: Callable[[CandidateResult, Tensors], None] | None = None,
            should_cancel: Callable[[], bool] | None = None) -> AverageResult:
        """Build and score every candidate; keep the best (the first listed on ties).

        Nested windows (see `nested_windows`) are built smallest first in one pass over
        the checkpoints, others one by one; the curve keeps the order of `candidates`.
        Without eval data only one candidate can be chosen from, so `candidates` must
        hold exactly one. `on_candidate` sees each result and state before the next is
        built (it may write the state out). Raises Cancelled between candidates.
        """
        if not candidates:
            raise ValueError("no candidates to average")
        if self.eval_data is None and len(candidates) > 1:
            raise ValueError("choosing among several candidates needs eval data")
        order = sorted(range(len(candidates)), key=lambda i: len(candidates[i].indices))
        if nested_windows(candidates):
            averages = self._nested_averages([candidates[i] for i in order])
        else:
            order = list(range(len(candidates)))
            averages = (self._average(candidates[i]) for i in order)
        best: tuple[int, CandidateResult, Tensors] | None = None
        results: dict[int, CandidateResult] = {}
        for position in order:
            if should_cancel is not None and should_cancel():
                raise Cancelled("averaging cancelled between candidates")
            state = self.finish(next(averages))
            result = results[position] = CandidateResult(candidates[position], self.score())
            if on_candidate is not None:
                on_candidate(result, state)
            # The best score wins; among equals, the candidate listed first.
            if best is None or (result.score(), -position) > (best[1].score(), -best[0]):
                best = (position, result, state)
            del state
        return AverageResult(best[1], best[2], [results[i] for i in range(len(candidates))])
