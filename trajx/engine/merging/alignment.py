"""Aligning model B onto model A (Git Re-Basin) and measuring the interpolation barrier.

Two ways to find the permutation π of B's hidden units:

- `weights`: weight matching, the matching engine with one pair (A's and B's
  parameters): maximise Σ ⟨θ_A, π θ_B⟩ by coordinate descent over groups.
- `activations`: activation matching on data. For each permutation group the hidden
  activations that carry it are found by probing (permuting only that group of a model
  must permute exactly those outputs); A's and B's are correlated unit by unit over the
  data and π is the linear assignment maximising the summed Pearson correlation
  (Ainsworth et al., 2023, §3.1). Their reference code (samuela/git-re-basin,
  `mnist_mlp_activation_matching.py`) matches post-ReLU activations with the same LAP,
  scoring by Pearson correlation or by the raw cross moment E[a bᵀ]; correlation is
  used here because it ignores each unit's scale (a conv output before its BatchNorm).

The barrier of a path α ↦ θ(α) = (1 − α) θ_A + α θ_B is the largest excess of the loss
over the straight line between its endpoints' losses. Every floating tensor of the state
(parameters, permuted or not, and buffers) is interpolated, so α = 0 is A and α = 1 is
B exactly; integer buffers (BatchNorm's batch count) come from A. BatchNorm statistics
are then re-estimated at every point (interpolated statistics are meaningless).
"""

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from trajx.engine.batches import Dataset
from trajx.engine.bn import reestimated_state
from trajx.engine.losses import CLASSES_OR_VALUES, Task
from trajx.engine.matching.descent import MatchResult, PairBank, match
from trajx.engine.matching.solvers import Solver, break_ties, warm_started
from trajx.engine.metrics import evaluate
from trajx.engine.permutation.spec import (
    Permutation,
    PermutationSpec,
    apply_permutation,
    expand_index,
)
from trajx.errors import Cancelled, UnsupportedModel

Tensors = dict[str, torch.Tensor]
ALPHAS = tuple(i / 10 for i in range(11))


def matched_parameters(model: nn.Module, spec: PermutationSpec) -> list[str]:
    """Parameter names with at least one permuted axis (those weight matching compares)."""
    return [n for n, _ in model.named_parameters()
            if any(g is not None for g in spec.param_groups.get(n, ()))]


def weight_matching(spec: PermutationSpec, state_a: Mapping[str, torch.Tensor],
                    state_b: Mapping[str, torch.Tensor], names: Sequence[str], *,
                    max_iter: int = 100, tol: float = 1e-7, seed: int = 0,
                    solver: Solver = warm_started, init: Permutation | None = None) -> MatchResult:
    """π maximising Σ_names ⟨A, π B⟩ (`.perm`: apply it to B to align B onto A), with the
    objective before and after each coordinate-descent sweep (`.objectives`). Descent
    starts from `init` (identity by default) and only ever improves on it."""
    pair = ({n: state_a[n].float() for n in names}, {n: state_b[n].float() for n in names})
    bank = PairBank.from_pairs([pair], names)
    return match(spec, bank, init, max_iter=max_iter, tol=tol,
                 generator=torch.Generator().manual_seed(seed), solver=solver)


@dataclass(frozen=True)
class Probe:
    """Where group `group`'s units show in the activations: output `dim` of module `module`,
    each unit as a block of `repeat` features (an attention head's dimensions), the whole
    group `tile` times over (a fused q/k/v projection)."""

    group: str
    module: str
    dim: int
    repeat: int = 1
    tile: int = 1


def find_probes(model: nn.Module, spec: PermutationSpec, example: torch.Tensor,
                generator: torch.Generator) -> list[Probe]:
    """For each group, the latest module output (in forward order) that the group permutes.

    A module output carries group g on axis d when permuting g alone in the model's
    weights reorders that output along d by the same permutation and changes nothing
    else. The latest such output is the post-activation one Git Re-Basin correlates.
    Raises UnsupportedModel("activations_unobservable") for a group no module output
    carries (e.g. one that lives only inside functional code): use `weights` then.
    """
    base_state = {n: t.detach().clone() for n, t in model.state_dict().items()}  # not views
    with torch.no_grad():
        reference = _module_outputs(model, example)
        probes = []
        for group in spec.groups:
            perm = torch.randperm(group.size, generator=generator)
            while group.size > 1 and bool((perm == torch.arange(group.size)).all()):
                perm = torch.randperm(group.size, generator=generator)
            permuted = apply_permutation(spec, {**spec.identity(), group.name: perm}, base_state)
            model.load_state_dict(permuted)
            outputs = _module_outputs(model, example)
            found = None
            for name, value in reference.items():
                carried = _carrying_axis(value, outputs[name], perm)
                if carried is not None:
                    found = Probe(group.name, name, *carried)  # keep the latest
            if found is None:
                raise UnsupportedModel(
                    f"activation matching cannot observe permutation group {group.name!r}: no module "
                    "output is reordered by it; use method 'weights'",
                    code="activations_unobservable", group=group.name)
            probes.append(found)
        model.load_state_dict(base_state)
    return probes


def _carrying_axis(before: torch.Tensor, after: torch.Tensor,
                   perm: torch.Tensor) -> tuple[int, int, int] | None:
    """(dim, repeat, tile) of the axis that `perm` reorders (`tile` copies of the group,
    each unit a block of `repeat`), else None."""
    scale = float(before.abs().max()) or 1.0
    for dim in range(1, before.ndim):
        copies, rest = divmod(before.shape[dim], len(perm))
        for tile in (t for t in range(1, copies + 1) if not rest and copies % t == 0):
            repeat = copies // tile
            expected = before.index_select(dim, expand_index(perm, repeat, tile))
            if torch.allclose(after, expected, rtol=1e-4, atol=1e-5 * scale) and \
                    not torch.allclose(after, before, rtol=1e-4, atol=1e-5 * scale):
                return dim, repeat, tile
    return None


def _module_outputs(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every submodule's tensor output on `inputs`, in the order they were produced."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(_recorder(outputs, name))
             for name, module in model.named_modules() if name]
    try:
        model.eval()
        model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def _recorder(outputs: dict[str, torch.Tensor], name: str):
    def hook(module, args, output):
        if isinstance(output, torch.Tensor):
            outputs.pop(name, None)  # a module called twice counts at its last call
            outputs[name] = output.detach()
    return hook


def _unit_columns(x: torch.Tensor, dim: int, repeat: int, tile: int) -> torch.Tensor:
    """(N, ..., t·C·r at dim, ...) -> (N x positions x t x r, C): one column per unit; the
    t·r features of a unit count as more observations of it (feature k of tile s of a unit
    in A is compared with the same feature of a unit in B)."""
    units = x.shape[dim] // (repeat * tile)
    x = x.movedim(dim, -1).reshape(-1, tile, units, repeat)  # (samples x positions, t, C, r)
    return x.transpose(2, 3).reshape(-1, units).double()


class _Correlation:
    """Streaming Pearson correlation between the units of two activations, [C, C]."""

    def __init__(self, units: int, device: torch.device) -> None:
        zeros = partial(torch.zeros, dtype=torch.float64, device=device)
        self.n = 0
        self.sum_a, self.sum_b = zeros(units), zeros(units)
        self.sq_a, self.sq_b = zeros(units), zeros(units)
        self.cross = zeros(units, units)

    def add(self, a: torch.Tensor, b: torch.Tensor, probe: "Probe") -> None:
        a = _unit_columns(a, probe.dim, probe.repeat, probe.tile)
        b = _unit_columns(b, probe.dim, probe.repeat, probe.tile)
        self.n += len(a)
        self.sum_a += a.sum(0)
        self.sum_b += b.sum(0)
        self.sq_a += (a * a).sum(0)
        self.sq_b += (b * b).sum(0)
        self.cross += a.T @ b

    def matrix(self) -> torch.Tensor:
        mean_a, mean_b = self.sum_a / self.n, self.sum_b / self.n
        cov = self.cross / self.n - torch.outer(mean_a, mean_b)
        std_a = (self.sq_a / self.n - mean_a**2).clamp_min(0).sqrt()
        std_b = (self.sq_b / self.n - mean_b**2).clamp_min(0).sqrt()
        return cov / (torch.outer(std_a, std_b) + 1e-12)


def activation_matching(model: nn.Module, spec: PermutationSpec, state_a: Mapping[str, torch.Tensor],
                        state_b: Mapping[str, torch.Tensor], batches: Sequence[torch.Tensor],
                        probes: Sequence[Probe], solver: Solver = warm_started) -> Permutation:
    """π from correlating A's and B's activations at each group's probe over `batches`.

    Row i of a group's correlation matrix is A's unit i; π[g][i] is the B unit that
    correlates best under the one-to-one constraint, so π applied to B aligns it onto A.
    """
    model_a, model_b = model, copy.deepcopy(model)
    model_a.load_state_dict(state_a)
    model_b.load_state_dict(state_b)
    device = next(iter(state_a.values())).device
    sizes = {g.name: g.size for g in spec.groups}
    stats = {p.group: _Correlation(sizes[p.group], device) for p in probes}
    with torch.no_grad():
        for batch in batches:
            out_a, out_b = _module_outputs(model_a, batch), _module_outputs(model_b, batch)
            for probe in probes:
                stats[probe.group].add(out_a[probe.module], out_b[probe.module], probe)
    perm = spec.identity()
    for group, stat in stats.items():
        cols = solver(break_ties(stat.matrix().cpu().numpy()))
        perm[group] = torch.as_tensor(cols, dtype=torch.int64)
    return perm


def interpolate(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                alpha: float) -> Tensors:
    """(1 − α)·A + α·B on every floating entry; integer entries from A.

    torch.lerp is exact at both ends (α = 0 gives A's bits, α = 1 gives B's).
    """
    return {name: torch.lerp(a.float(), state_b[name].float(), alpha).to(a.dtype)
            if a.is_floating_point() else a for name, a in state_a.items()}


@dataclass
class Curve:
    """Metrics at each α of one interpolation path, and its barriers."""

    points: list[dict[str, float]]

    def barrier(self, key: str = "loss") -> float:
        """max_α of the loss above (or, for accuracy, below) the endpoints' straight line."""
        first, last = self.points[0][key], self.points[-1][key]
        sign = 1.0 if key == "loss" else -1.0
        excess = max(sign * (p[key] - ((1 - p["alpha"]) * first + p["alpha"] * last)) for p in self.points)
        return excess + 0.0  # no -0.0 in reports

    def to_json(self) -> dict:
        summary = {"loss_barrier": self.barrier("loss"), "points": self.points}
        if all("accuracy" in p for p in self.points):
            summary["accuracy_barrier"] = self.barrier("accuracy")
        return summary


@dataclass
class PathEvaluator:
    """Evaluates interpolated models: BatchNorm re-estimated at each point, then scored."""

    model: nn.Module
    bn_inputs: Sequence[torch.Tensor]
    eval_data: Dataset
    batch_size: int
    device: torch.device
    should_cancel: Callable[[], bool] | None = None
    task: Task = CLASSES_OR_VALUES  # the model's loss and accuracy

    def point(self, state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
              alpha: float) -> Tensors:
        """The model at α with BatchNorm re-estimated (left loaded in the working model), on CPU."""
        return self.finish(interpolate(state_a, state_b, alpha))

    def finish(self, state: Mapping[str, torch.Tensor]) -> Tensors:
        """`state` loaded, BatchNorm re-estimated (left loaded in the working model); on CPU."""
        return reestimated_state(self.model, state, self.bn_inputs)

    @property
    def bn_samples(self) -> int:
        """How many samples BatchNorm statistics are re-estimated on."""
        return sum(len(batch) for batch in self.bn_inputs)

    def curve(self, state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
              alphas: Sequence[float] = ALPHAS) -> Curve:
        """Metrics at each α of `alphas` (ascending, from 0 to 1: the barrier is measured
        against the endpoints' straight line)."""
        points = []
        for alpha in alphas:
            if self.should_cancel is not None and self.should_cancel():
                raise Cancelled("alignment cancelled between interpolation points")
            self.point(state_a, state_b, alpha)
            points.append({"alpha": alpha, **self.score()})
        return Curve(points)

    def score(self, data: Dataset | None = None) -> dict[str, float]:
        """Metrics of the model the evaluator holds now, on `data` (default: its eval data)."""
        return evaluate(self.model, self.eval_data if data is None else data, self.batch_size, self.device, self.task)
