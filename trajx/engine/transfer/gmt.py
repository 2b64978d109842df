"""Transfer of a learning trajectory onto new initializations (docs/design.md §1).

For a permutation π the transferred trajectory is θ₂ˢ = θ₂⁰ + π(θ₁ˢ − θ₁⁰). How π is
found is the method's (`trajx.engine.transfer.methods`: Naive, Oracle, FGMT, GMT); the LAP
solver is the caller's (`trajx.engine.matching.solvers`), options are `TransferOptions`.

Source-side gradients are shared by all targets of an ensemble. Only parameters move
along the trajectory: a source point runs with the source initialization's buffers, a
target point with its target's, and BatchNorm statistics are re-estimated on training
batches for every model that is evaluated or returned.
"""

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from trajx.engine.batches import BatchSampler, Dataset
from trajx.engine.bn import reestimate_batch_norm
from trajx.engine.losses import CLASSES_OR_VALUES, Task
from trajx.engine.matching.descent import GradientStack, MatchResult, PairBank, match
from trajx.engine.matching.solvers import Solver, warm_started
from trajx.engine.merging.averaging import Accumulator
from trajx.engine.metrics import evaluate
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.spec import (
    Permutation,
    PermutationSpec,
    StateDict,
    permute_param,
    require_groups,
)
from trajx.engine.transfer.methods import FGMT, Method
from trajx.engine.transfer.schedule import TrajectoryPoint, plan_trajectory
from trajx.errors import Cancelled, InvalidInput, NonFiniteLoss

DEFAULT_OPTIONS, DEFAULT_METHOD = TransferOptions(), FGMT()  # both immutable
# on_progress(step, total, target index, metrics of that step)
ProgressCallback = Callable[[int, int, int, dict[str, float]], None]
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StepState:
    """What a transfer needs to continue after `step`: every target's permutation after that
    step and its metrics, and (when the run was asked to keep them) the step's gradient
    pair: each target's gradient, then the source gradient they share. The states of steps
    1..r resume a run at step r + 1 with the result of an uninterrupted one; pairs missing
    from any of them are recomputed from the permutations (2·G backward passes per step,
    no matching), so whether to keep them is the caller's trade of bytes against time."""

    step: int
    perms: list[Permutation]
    metrics: list[dict[str, float]]
    pairs: list[Tensors] | None = None


class _Point(Mapping[str, torch.Tensor]):
    """A point of a trajectory whose parameters are computed one at a time, when read:
    loading it into the model, or adding it to an average, never holds a second whole model."""

    def __init__(self, names: list[str], value: Callable[[str], torch.Tensor]) -> None:
        self._names = names
        self._value = value

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        return self._value(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass
class TargetResult:
    """What one target initialization became. States are full CPU state dicts."""

    last: Tensors
    best: Tensors
    best_step: int
    permutation: Permutation
    steps: list[dict[str, float]]
    trajectory: list[Tensors] | None = None
    average: Tensors | None = None  # mean of the last k steps (average_last), BN re-estimated
    average_metrics: dict[str, float] | None = None


# The Timings seconds a stopwatch measures, per step as well as in total.
_MEASURED_SECONDS = ("gradient_seconds", "matching_seconds", "evaluation_seconds")
# Seconds every step's metrics hold. `source_gradient_seconds` is the step's source-side
# gradient work, shared by all targets of the ensemble (counted once in Timings).
STEP_TIMING_KEYS = (*_MEASURED_SECONDS, "source_gradient_seconds")


@dataclass
class Timings:
    """Where the time went in the whole run; seconds include device synchronisation."""

    gradient_seconds: float = 0.0
    matching_seconds: float = 0.0
    evaluation_seconds: float = 0.0
    backward_passes: int = 0
    matching_solves: int = 0


@dataclass
class TransferResult:
    targets: list[TargetResult]
    timings: Timings = field(default_factory=Timings)
    device: str = "cpu"


def resolve_device(name: str) -> torch.device:
    """`auto` means CUDA when available, else CPU; InvalidInput(code="device_unavailable")
    when `cuda` is asked for on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("params.device is 'cuda' but this machine has no usable CUDA device",
                           code="device_unavailable", field="params.device")
    return torch.device(name)


def transfer(model: nn.Module, spec: PermutationSpec, source: Sequence[StateDict],
             targets: Sequence[StateDict], train: Dataset, options: TransferOptions = DEFAULT_OPTIONS, *,
             method: Method = DEFAULT_METHOD, solver: Solver = warm_started, eval_data: Dataset | None = None,
             keep_trajectory: bool = False, task: Task = CLASSES_OR_VALUES,
             on_progress: ProgressCallback | None = None,
             should_cancel: Callable[[], bool] | None = None,
             average_last: int | None = None, resume: Sequence[StepState] = (),
             on_step: Callable[[StepState], None] | None = None, step_pairs: bool = False,
             until: int | None = None, plan: Sequence[TrajectoryPoint] | None = None) -> TransferResult:
    """Transfer the trajectory `source` (θ₁⁰ … θ₁ᴷ, K ≥ 1) onto each of `targets`.

    `model` is a working instance of the architecture (its weights are overwritten and
    it is moved to the run's device); `task` gives its loss and accuracy (the default:
    class ids or regression values); inputs are assumed validated (trajx.io). `method`
    is a strategy of `trajx.engine.transfer.methods`, `solver` the linear assignment solver every
    matching uses (any exact one gives the same result; timing them is the caller's). Returns
    one TargetResult per target (last step, best step on `eval_data`, or last when no
    eval data, the permutation, per-step metrics including that step's seconds under
    STEP_TIMING_KEYS, optionally every step's state, with `average_last` = k the mean of
    the last k steps' parameters, BatchNorm re-estimated, and its metrics).
    Raises ValueError for too short a source or missing oracle targets,
    UnsupportedModel("no_permutation_groups") for a matching method on a spec without
    groups, NonFiniteLoss
    when a loss turns NaN/inf, Cancelled when `should_cancel()` is true between steps.

    Resuming: `on_step` gets a StepState after each step all targets completed (with the
    step's gradient pair if `step_pairs`, for methods that collect pairs); given the
    states of steps 1..r as `resume`, a run continues at step r + 1 and returns what an
    uninterrupted run returns. `until` = u < steps stops after step u (with `resume` up to
    u: the result of the steps reached, last = step u, no window average; nothing recomputed
    but the returned states). `plan`: the trajectory points when the caller planned them
    already (`plan_trajectory(options.schedule, options.steps, len(source))`).
    """
    if len(source) < 2:
        raise ValueError(f"a source trajectory needs at least 2 checkpoints, got {len(source)}")
    if method.needs_groups:
        require_groups(spec, method.name)
    with _deterministic():
        points = list(plan) if plan is not None else plan_trajectory(options.schedule, options.steps, len(source))
        run = TransferRun(model, spec, source, targets, train, eval_data, options, solver,
                          keep_trajectory, task, on_progress, should_cancel, average_last, points)
        return run.execute(method, list(resume), on_step, step_pairs, options.steps if until is None else until)


def _norm(tensors: Tensors) -> torch.Tensor:
    """The Euclidean norm of all of `tensors` together, in float64."""
    return torch.sqrt(sum(t.double().pow(2).sum() for t in tensors.values()))


@contextmanager
def _deterministic():
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class _Stopwatch:
    """Adds each measured block to the run's totals and to the open step of its owner
    (target k, or None for work shared by all targets). Thread-safe: target k's matching
    is measured on the matching thread while target k+1's gradients are measured here."""

    def __init__(self, device: torch.device, totals: Timings) -> None:
        self.device = device
        self.totals = totals
        self._steps: dict[int | None, dict[str, float]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def measure(self, attribute: str, owner: int | None):
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        with self._lock:
            setattr(self.totals, attribute, getattr(self.totals, attribute) + elapsed)
            step = self._steps.setdefault(owner, {})
            step[attribute] = step.get(attribute, 0.0) + elapsed

    def take_step(self, owner: int | None) -> dict[str, float]:
        """`owner`'s seconds per Timings attribute since its last call (0.0 where nothing ran)."""
        with self._lock:
            step = self._steps.pop(owner, {})
        return {key: step.get(key, 0.0) for key in _MEASURED_SECONDS}


class _Tracker:
    """Per-target bookkeeping: step metrics, best and last state, optional trajectory."""

    def __init__(self, keep_trajectory: bool, average_names: list[str] | None) -> None:
        self.window = Accumulator(average_names) if average_names is not None else None
        self.steps: list[dict[str, float]] = []
        self.best: Tensors | None = None
        self.best_step = 0
        self.best_score = float("-inf")
        self.last: Tensors | None = None
        self.trajectory: list[Tensors] | None = [] if keep_trajectory else None

    def offer_best(self, step: int, metrics: dict[str, float], state: Tensors) -> None:
        score = _score(metrics)
        if score > self.best_score:
            self.best_score, self.best_step, self.best = score, step, state


def _score(metrics: dict[str, float]) -> float:
    # Accuracy when there are classes, else the lowest loss; the earliest step wins ties.
    return metrics["accuracy"] if "accuracy" in metrics else -metrics["loss"]


class TransferRun:
    """One transfer: the plan (points, batches) is fixed up front, then executed.

    Methods use `target_gradient`, `pair_target`, `match`, `source_delta`, `params_of` and the
    attributes `spec`, `source`, `target_inits`, `param_names`, `matched_names`, `device`.
    """

    def __init__(self, model, spec, source, targets, train, eval_data, params: TransferOptions,
                 solver: Solver, keep_trajectory, task, on_progress, should_cancel,
                 average_last, points: list[TrajectoryPoint]) -> None:
        if params.pair_weighting not in ("none", "unit"):
            raise ValueError(f"unknown pair_weighting {params.pair_weighting!r}; use 'none' or 'unit'")
        self.device = resolve_device(params.device)
        self.solver = solver
        self.model = model.to(self.device)
        self.spec = spec
        self.train = train
        self.eval_data = eval_data
        self.params = params
        self.keep_trajectory = keep_trajectory
        self.task = task
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self.average_last = average_last
        self.until = params.steps  # the step the run stops after (`execute`)
        self.timings = Timings()
        self.stopwatch = _Stopwatch(self.device, self.timings)

        self.param_names = [name for name, _ in model.named_parameters()]
        self.matched_names = [n for n in self.param_names
                              if any(g is not None for g in spec.param_groups.get(n, ()))]
        self.points = points
        self.source = source  # stays where the caller keeps it; one segment at a time moves
        self.source_origin = self.params_of(source[0])
        self._segment_cache: tuple[int, tuple[Tensors, Tensors]] | None = None
        self.source_buffers = self._buffers_of(source[0])
        self.target_inits = [self.params_of(t) for t in targets]
        self.target_buffers = [self._buffers_of(t) for t in targets]
        self._source_norms: list[torch.Tensor] = []  # of each step's source gradient

        # Plan every random draw now: BN batches first, then G batches per pair.
        sampler = BatchSampler(len(train), params.batch_size,
                               torch.Generator().manual_seed(params.seed))
        self.bn_inputs = [train.batch(i, self.device).inputs for i in sampler.draw_many(params.bn_batches)]
        self.pair_batches = [sampler.draw_many(params.grad_batches) for _ in range(params.steps)]

    def params_of(self, state: StateDict) -> Tensors:
        return {n: state[n].to(self.device, torch.float32) for n in self.param_names}

    def _buffers_of(self, state: StateDict) -> Tensors:
        return {n: t.to(self.device) for n, t in state.items() if n not in self.param_names}

    # -- points on the trajectories -------------------------------------------------

    def source_delta(self, index: int) -> Tensors:
        """θ₁ⁱ − θ₁⁰ for checkpoint `index`, on the device."""
        point = self.params_of(self.source[index])
        return {n: point[n] - self.source_origin[n] for n in self.param_names}

    def _segment(self, segment: int) -> tuple[Tensors, Tensors]:
        # A trajectory may hold many checkpoints: only the current segment's ends live on the
        # device (on the CPU, float32 checkpoints are used where they are, not copied).
        if self._segment_cache is None or self._segment_cache[0] != segment:
            start = self.source_origin if segment == 0 else self.params_of(self.source[segment])
            self._segment_cache = (segment, (start, self.params_of(self.source[segment + 1])))
        return self._segment_cache[1]

    def _displacement(self, step: int, name: str) -> torch.Tensor:
        """θ₁ˢ − θ₁⁰ of parameter `name` at trajectory point `step`."""
        point = self.points[step]
        start, end = self._segment(point.segment)
        origin = self.source_origin[name]
        return torch.lerp(start[name] - origin, end[name] - origin, point.fraction)

    def _source_point(self, step: int) -> "_Point":
        return _Point(self.param_names, lambda n: self.source_origin[n] + self._displacement(step, n))

    def _target_point(self, target: int, perm: Permutation, step: int) -> "_Point":
        init = self.target_inits[target]
        return _Point(self.param_names,
                      lambda n: init[n] + permute_param(self.spec, perm, n, self._displacement(step, n)))

    # -- model work ----------------------------------------------------------------

    @torch.no_grad()
    def _load(self, params: Mapping[str, torch.Tensor], buffers: Tensors | None = None) -> None:
        for name, tensor in self.model.named_parameters():
            tensor.copy_(params[name])
        for name, tensor in self.model.named_buffers():
            if buffers is not None and name in buffers:
                tensor.copy_(buffers[name])

    def _gradient(self, params: Mapping[str, torch.Tensor], buffers: Tensors, batches: list[torch.Tensor],
                  what: str, owner: int | None, store: Callable[[Tensors], None]) -> None:
        """Mean gradient over `batches` at `params`, BatchNorm on batch statistics, handed
        to `store` (which copies it into a pair stack) and then freed.

        `buffers` are those of the model the point belongs to (source or target k):
        the working model still holds whichever model ran last.
        """
        with self.stopwatch.measure("gradient_seconds", owner):
            self._load(params, buffers)
            self.model.train()
            # Dropout off: both sides of a pair must see the same function on the same batch.
            for module in self.model.modules():
                if isinstance(module, nn.modules.dropout._DropoutNd):
                    module.eval()
            self.model.zero_grad(set_to_none=True)
            total = torch.zeros((), device=self.device)
            for indices in batches:
                batch = self.train.batch(indices, self.device)
                loss = self.task.loss(self.task.outputs(self.model, batch), batch.targets) / len(batches)
                loss.backward()
                total += loss.detach()
            self.timings.backward_passes += len(batches)
            if not torch.isfinite(total):
                raise NonFiniteLoss(f"training loss is {float(total)} at {what}", where=what)
            named = dict(self.model.named_parameters())
            store({n: named[n].grad if named[n].grad is not None else torch.zeros_like(named[n])
                   for n in self.matched_names})
            self.model.zero_grad(set_to_none=True)  # not kept beside the matching that runs next

    def _finish(self, target: int, params: Mapping[str, torch.Tensor]) -> Tensors:
        """The full state of `params` with BatchNorm re-estimated, on CPU."""
        self._load(params, self.target_buffers[target])
        reestimate_batch_norm(self.model, self.bn_inputs)
        return {n: t.detach().to("cpu", copy=True) for n, t in self.model.state_dict().items()}

    def target_gradient(self, k: int, perm: Permutation, t: int, store: Callable[[Tensors], None]) -> None:
        """The gradient at target k's point t under `perm`, on that point's batches, handed to `store`."""
        self._gradient(self._target_point(k, perm, t), self.target_buffers[k],
                       self.pair_batches[t], f"target {k} step {t}", k, store)

    def pair_target(self, k: int, perm: Permutation, t: int, store: Callable[[Tensors], None]) -> None:
        """The target side of pair t as the bank stores it, handed to `store`: the target
        gradient, under pair_weighting "unit" divided by its norm and the source gradient's
        (the pair's term in the objective becomes their cosine)."""
        if self.params.pair_weighting == "none":
            self.target_gradient(k, perm, t, store)
            return

        def scaled(gradient: Tensors) -> None:
            scale = 1.0 / (_norm(gradient) * self._source_norms[t]).clamp_min(1e-30)
            store({n: g * scale for n, g in gradient.items()})

        self.target_gradient(k, perm, t, scaled)

    def match(self, bank: PairBank, init: Permutation, k: int, sweeps: int | None = None) -> MatchResult:
        """Target k's weight matching of `bank` from `init`, at most `sweeps` sweeps (None:
        the options' max_iter); timed as its step's matching seconds; k also offsets the
        seed of the group order."""
        matching = self.params.matching
        with self.stopwatch.measure("matching_seconds", k):
            result = match(self.spec, bank, init, max_iter=min(matching.max_iter, sweeps or matching.max_iter),
                           tol=matching.tol,
                           generator=torch.Generator().manual_seed(self.params.seed + k),
                           solver=self.solver, workers=matching.solve_threads)
        self.timings.matching_solves += 1
        return result

    # -- the run -------------------------------------------------------------------

    def _check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("transfer cancelled between steps")

    def execute(self, method: Method, resume: list[StepState], on_step: Callable[[StepState], None] | None,
                step_pairs: bool, until: int) -> TransferResult:
        count, done = len(self.target_inits), len(resume)
        if [state.step for state in resume] != list(range(1, done + 1)) or done > until:
            raise ValueError(f"resume states must be steps 1..r with r <= {until}, "
                             f"got {[state.step for state in resume]}")
        perms = method.initial_perms(self)
        history = [[perms[k], *(state.perms[k] for state in resume)] for k in range(count)]
        perms = [history[k][-1] for k in range(count)]
        trackers = [_Tracker(self.keep_trajectory, self.param_names if self.average_last else None)
                    for _ in range(count)]
        banks: list[PairBank] = []
        if method.uses_gradients and done < until:
            pair_device = self.device if self.params.pair_device == "auto" else torch.device("cpu")
            shapes = {n: tuple(self.source_origin[n].shape) for n in self.matched_names}
            first = PairBank.allocate(shapes, self.params.steps, pair_device, self.params.pair_dtype)
            banks = [first] + [PairBank.allocate(shapes, self.params.steps, pair_device, self.params.pair_dtype,
                                                 source=first.source) for _ in range(count - 1)]
        if self.keep_trajectory:
            for k in range(count):
                trackers[k].trajectory.append(self._finish(k, self.target_inits[k]))
        self.until = until
        # Stored pairs hold no source norms: under unit weighting they are recomputed.
        stored = all(state.pairs is not None for state in resume) and self.params.pair_weighting == "none"
        for t in range(1, done + 1) if banks else ():
            if stored:
                banks[0].source.append(resume[t - 1].pairs[count])
            else:
                self._source_gradient(banks[0], t)
        for k in range(count):
            self._restore(trackers[k], k, history[k], [state.metrics[k] for state in resume])
            for t in range(1, done + 1) if banks else ():
                # The pair of step t as it was made: target gradient under the permutation before it.
                if stored:
                    banks[k].add(resume[t - 1].pairs[k])
                else:
                    self.pair_target(k, history[k][t - 1], t - 1, banks[k].add)
        for k in range(count):  # work before the first step (oracle matching, a resume) is in the totals only
            self.stopwatch.take_step(k)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="trajx-matching") as matcher:
            if banks:
                self._source_gradient(banks[0], done + 1)
            for step in range(done + 1, until + 1):
                self._check_cancel()
                shared = {"source_gradient_seconds": self.stopwatch.take_step(None)["gradient_seconds"]}
                # Target k's matching runs on `matcher` while target k+1's gradients, and
                # after the last target the next step's source gradient (which no matching
                # changes), are computed here; each target is recorded in order once its
                # matching is done.
                solving: tuple[int, Future] | None = None
                for k in range(count):
                    self._check_cancel()
                    bank = banks[k] if banks else None
                    method.prepare(self, bank, k, perms[k], step)
                    future = matcher.submit(method.solve, self, bank, k, perms[k])
                    if not self.params.overlap_matching:
                        future.result()
                    if solving is not None:
                        self._end_step(*solving, perms, trackers, step, shared)
                    solving = (k, future)
                if banks and step < until:
                    self._source_gradient(banks[0], step + 1)
                self._end_step(*solving, perms, trackers, step, shared)
                if on_step is not None:
                    pairs = [self._pair(bank.target, step) for bank in banks] + [self._pair(banks[0].source, step)] \
                        if step_pairs and banks else None
                    on_step(StepState(step, [{g: p.cpu() for g, p in perm.items()} for perm in perms],
                                      [tracker.steps[-1] for tracker in trackers], pairs))

        results = []
        for k, tracker in enumerate(trackers):
            best, best_step = (tracker.best, tracker.best_step) if tracker.best is not None \
                else (tracker.last, until)
            results.append(TargetResult(tracker.last, best, best_step,
                                        {g: p.cpu() for g, p in perms[k].items()},
                                        tracker.steps, tracker.trajectory,
                                        *self._window_average(tracker, k, until)))
        return TransferResult(results, self.timings, str(self.device))

    @staticmethod
    def _pair(stack: GradientStack, step: int) -> Tensors:
        """Step `step`'s entry of a gradient stack, copied to the CPU as stored (its dtype)."""
        return {n: stack.stacked(n, step)[step - 1].to("cpu", copy=True) for n in stack.names}

    def _restore(self, tracker: "_Tracker", k: int, history: list[Permutation],
                 metrics: list[dict[str, float]]) -> None:
        """Target k's tracker as it was after step len(metrics), from each step's permutation
        (`history`, step 0 first) and metrics: the kept states are recomputed, not stored."""
        done = len(metrics)
        tracker.steps = [dict(m) for m in metrics]
        for step in range(1, done + 1):
            if tracker.window is not None and step > self.params.steps - self.average_last:
                tracker.window.add(self._target_point(k, history[step], step), 1.0 / self.average_last)
            if tracker.trajectory is not None:
                tracker.trajectory.append(self._finish(k, self._target_point(k, history[step], step)))
        if self.eval_data is not None and done:
            best = max(range(1, done + 1), key=lambda s: (_score(metrics[s - 1]), -s))
            tracker.best_score, tracker.best_step = _score(metrics[best - 1]), best
            tracker.best = self._finish(k, self._target_point(k, history[best], best))
        if done and done == self.until:
            tracker.last = self._finish(k, self._target_point(k, history[done], done))

    def _source_gradient(self, bank: PairBank, step: int) -> None:
        """Append the source gradient of `step` (at source point step − 1) to the shared stack;
        the matchings read only the pairs before it."""

        def keep(gradient: Tensors) -> None:
            self._source_norms.append(_norm(gradient))
            bank.source.append(gradient)

        self._gradient(self._source_point(step - 1), self.source_buffers, self.pair_batches[step - 1],
                       f"source step {step - 1}", None, keep)

    def _end_step(self, k: int, solving: Future, perms: list[Permutation], trackers: list["_Tracker"],
                  step: int, shared: dict[str, float]) -> None:
        """Take target k's matching result, record the step and report it."""
        tracker = trackers[k]
        metrics: dict[str, float] = {"step": step}
        result = solving.result()
        if result is not None:
            perms[k] = result.perm
            metrics |= {"objective": result.objectives[-1], "sweeps": result.sweeps}
        metrics |= self._record(tracker, k, perms[k], step)
        metrics |= self.stopwatch.take_step(k) | shared
        tracker.steps.append(metrics)
        if self.on_progress is not None:
            self.on_progress(step, self.params.steps, k, metrics)

    def _window_average(self, tracker: _Tracker, k: int, until: int) -> tuple[Tensors | None, dict[str, float] | None]:
        """The mean of the last `average_last` steps with BN re-estimated, and its metrics
        (none for a run stopped before its last step)."""
        if tracker.window is None or until < self.params.steps:
            return None, None
        with self.stopwatch.measure("evaluation_seconds", k):
            state = self._finish(k, tracker.window.result())
            metrics = {} if self.eval_data is None else \
                evaluate(self.model, self.eval_data, 4 * self.params.batch_size, self.device, self.task)
        return state, metrics

    def _record(self, tracker: _Tracker, k: int, perm: Permutation, step: int) -> dict[str, float]:
        """Evaluate/keep step `step` of target k as needed; returns its eval metrics."""
        last = step == self.until
        if tracker.window is not None and step > self.params.steps - self.average_last:
            tracker.window.add(self._target_point(k, perm, step), 1.0 / self.average_last)
        if self.eval_data is None and not self.keep_trajectory and not last:
            return {}
        metrics: dict[str, float] = {}
        with self.stopwatch.measure("evaluation_seconds", k):
            state = self._finish(k, self._target_point(k, perm, step))
            if self.eval_data is not None:
                # No gradients are kept, so a bigger batch than training's fits and runs faster.
                metrics = evaluate(self.model, self.eval_data, 4 * self.params.batch_size, self.device,
                                   self.task)
        if self.eval_data is not None:
            if not all(math.isfinite(v) for v in metrics.values()):
                raise NonFiniteLoss(f"eval loss is {metrics['loss']} for target {k} at step {step}",
                                    target=k, step=step)
            tracker.offer_best(step, metrics, state)
        if tracker.trajectory is not None:
            tracker.trajectory.append(state)
        if last:
            tracker.last = state
        return metrics
