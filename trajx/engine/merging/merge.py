"""Merging N models: alignment onto one frame, weighted averages, REPAIR, greedy soups.

- Alignment: every model weight-matched onto a reference (`align_to_reference`), or
  Git Re-Basin's MergeMany (`merge_many`, Ainsworth et al. 2023, Alg. 3): each model in
  turn is matched onto the weighted mean of the others, round after round, until no
  permutation changes.
- `weighted_merge`: Σᵢ wᵢ θᵢ tensor by tensor, the weights per model, or per tensor by
  the longest matching name prefix (per-layer weights); integer entries from the first.
- `repair` (Jordan et al., "REPAIR", 2023): a merge of networks without BatchNorm loses
  the variance of its hidden units; each hidden layer's output channels are rescaled and
  shifted (folded into that layer's weight and bias) to the mean and standard deviation
  the inputs' interpolation predicts: Σᵢ wᵢ μᵢ and Σᵢ wᵢ σᵢ, measured on data, layer
  after layer so each correction sees the corrected layers before it.
- `greedy_soup` (Wortsman et al., "Model soups", 2022): models ranked on one split,
  added best first while the uniform soup's score on that split does not drop.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trajx.engine.matching.solvers import Solver, warm_started
from trajx.engine.merging.alignment import weight_matching
from trajx.engine.permutation.spec import Permutation, PermutationSpec, apply_permutation
from trajx.errors import Cancelled

Tensors = dict[str, torch.Tensor]
# per-layer weights: state-dict name prefix -> one weight per model
LayerWeights = Mapping[str, Sequence[float]]


def normalised(weights: Sequence[float]) -> list[float]:
    """`weights` divided by their sum (ValueError when they do not sum to a positive number)."""
    total = float(sum(weights))
    if not total > 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights must be non-negative and not all zero, got {list(weights)}")
    return [w / total for w in weights]


def weights_for(name: str, weights: Sequence[float], layer_weights: LayerWeights) -> list[float]:
    """The normalised weights of tensor `name`: those of its longest matching prefix, else `weights`.

    A prefix matches at a name-segment boundary (`blocks.1` matches `blocks.1.fc.weight`,
    not `blocks.10.fc.weight`).
    """
    matching = [p for p in layer_weights if name == p or name.startswith(p + ".")]
    return normalised(layer_weights[max(matching, key=len)] if matching else weights)


def weighted_merge(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float],
                   layer_weights: LayerWeights | None = None) -> Tensors:
    """Σᵢ wᵢ·statesᵢ on every floating entry, accumulated in float32 and returned in the first
    state's dtype; integer entries from the first state."""
    layer_weights = layer_weights or {}
    merged = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            merged[name] = first
            continue
        total = torch.zeros(first.shape, dtype=torch.float32, device=first.device)
        for state, weight in zip(states, weights_for(name, weights, layer_weights), strict=True):
            total += weight * state[name].float()
        merged[name] = total.to(first.dtype)
    return merged


@dataclass
class Alignment:
    """Each model's permutation into the common frame and how it was found.

    `objectives[i]`: model i's matching objective Σ⟨target, π θᵢ⟩ before and after each
    coordinate-descent sweep of its last solve (empty for the reference); `rounds`: the
    MergeMany rounds run, `changed`: how many permutations changed in each round.
    """

    perms: list[Permutation]
    objectives: list[list[float]]
    rounds: int = 0
    changed: list[int] | None = None

    def apply(self, spec: PermutationSpec, states: Sequence[Mapping[str, torch.Tensor]]) -> list[Tensors]:
        return [apply_permutation(spec, perm, state) for perm, state in zip(self.perms, states, strict=True)]


def align_to_reference(spec: PermutationSpec, states: Sequence[Mapping[str, torch.Tensor]], reference: int,
                       names: Sequence[str], solver: Solver = warm_started, **matching) -> Alignment:
    """Weight-match every model onto `states[reference]` (which keeps the identity)."""
    perms, objectives = [], []
    for index, state in enumerate(states):
        if index == reference:
            perms.append(spec.identity())
            objectives.append([])
            continue
        result = weight_matching(spec, states[reference], state, names, solver=solver, **matching)
        perms.append(result.perm)
        objectives.append(result.objectives)
    return Alignment(perms, objectives)


def merge_many(spec: PermutationSpec, states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float],
               names: Sequence[str], rounds: int, seed: int = 0, solver: Solver = warm_started,
               should_cancel: Callable[[], bool] | None = None, **matching) -> Alignment:
    """MergeMany: match each model (in a seeded random order each round) onto the weighted
    mean of the others as they are aligned so far, starting from its current permutation
    (so no step lowers Σᵢ ⟨mean of the others, πᵢθᵢ⟩); stop after a round that changes
    no permutation, or after `rounds`."""
    generator = torch.Generator().manual_seed(seed)
    perms = [spec.identity() for _ in states]
    objectives: list[list[float]] = [[] for _ in states]
    changed_per_round = []
    for _ in range(rounds):
        changed = 0
        for index in torch.randperm(len(states), generator=generator).tolist():
            if should_cancel is not None and should_cancel():
                raise Cancelled("merge cancelled between alignments")
            others = [j for j in range(len(states)) if j != index]
            # The others' weights (all of them equal when the others weigh nothing).
            mean = weighted_merge([apply_permutation(spec, perms[j], states[j]) for j in others],
                                  [weights[j] for j in others] if sum(weights[j] for j in others) > 0
                                  else [1.0] * len(others))
            result = weight_matching(spec, mean, states[index], names, seed=seed, solver=solver,
                                     init=perms[index], **matching)
            if any(not torch.equal(result.perm[g], perms[index][g]) for g in result.perm):
                changed += 1
            perms[index], objectives[index] = result.perm, result.objectives
        changed_per_round.append(changed)
        if changed == 0:
            break
    return Alignment(perms, objectives, len(changed_per_round), changed_per_round)


def hidden_layers(model: nn.Module, spec: PermutationSpec) -> list[str]:
    """Linear and convolution modules whose output channels are a permuted (hidden) axis, in
    forward-registration order: the layers REPAIR corrects."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
            and (spec.param_groups.get(f"{name}.weight") or (None,))[0] is not None]


@torch.no_grad()
def _channel_stats(model: nn.Module, layer: str, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of each output channel of `layer` over `inputs` (float64)."""
    module = model.get_submodule(layer)
    seen = []

    def hook(_module, _args, output):
        channels = output.movedim(1, -1) if not isinstance(module, nn.Linear) else output
        seen.append(channels.reshape(-1, channels.shape[-1]).double())

    handle = module.register_forward_hook(hook)
    try:
        model.eval()
        for batch in inputs:
            model(batch)
    finally:
        handle.remove()
    values = torch.cat(seen)
    return values.mean(0), values.std(0, correction=0)


@torch.no_grad()
def repair(model: nn.Module, merged: Mapping[str, torch.Tensor], states: Sequence[Mapping[str, torch.Tensor]],
           weights: Sequence[float], layers: Sequence[str], inputs: Sequence[torch.Tensor],
           layer_weights: LayerWeights | None = None) -> tuple[Tensors, list[dict]]:
    """`merged` with each of `layers` rescaled to the interpolated statistics of `states`.

    Returns the repaired state and, per layer, the merged and target mean std across
    channels (what REPAIR restored). Layers without a bias get the scale only.
    """
    layer_weights = layer_weights or {}
    targets = {}
    for index, state in enumerate(states):
        model.load_state_dict(state)
        for layer in layers:
            mean, std = _channel_stats(model, layer, inputs)
            w = weights_for(f"{layer}.weight", weights, layer_weights)[index]
            sum_mean, sum_std = targets.get(layer, (0.0, 0.0))
            targets[layer] = (sum_mean + w * mean, sum_std + w * std)
    repaired = dict(merged)
    report = []
    for layer in layers:
        model.load_state_dict(repaired)
        mean, std = _channel_stats(model, layer, inputs)
        goal_mean, goal_std = targets[layer]
        scale = goal_std / std.clamp_min(1e-12)
        weight = repaired[f"{layer}.weight"]
        shape = (-1,) + (1,) * (weight.ndim - 1)
        repaired[f"{layer}.weight"] = (weight.double() * scale.reshape(shape)).to(weight.dtype)
        bias = repaired.get(f"{layer}.bias")
        if bias is not None:
            repaired[f"{layer}.bias"] = ((bias.double() - mean) * scale + goal_mean).to(bias.dtype)
        report.append({"layer": layer, "merged_std": float(std.mean()), "target_std": float(goal_std.mean())})
    return repaired, report


@dataclass
class Soup:
    """A greedy soup: `ingredients` (indices into the models, in the order added), the score
    of each model and of each soup tried on the choosing split, and the soup's state."""

    ingredients: list[int]
    ranking: list[int]
    model_scores: list[Any]
    tried: list[dict]
    state: Tensors


def greedy_soup(states: Sequence[Mapping[str, torch.Tensor]], score: Callable[[Mapping[str, torch.Tensor]], Any],
                should_cancel: Callable[[], bool] | None = None) -> Soup:
    """Rank `states` by `score` (any comparable value, higher is better; ties: the earlier
    model), then add each, best first, to the soup when the uniform soup's score does not drop."""
    model_scores = [score(state) for state in states]
    ranking = sorted(range(len(states)), key=lambda i: model_scores[i], reverse=True)  # stable: ties keep order
    ingredients, best = [ranking[0]], model_scores[ranking[0]]
    soup = dict(states[ranking[0]])
    tried = []
    for index in ranking[1:]:
        if should_cancel is not None and should_cancel():
            raise Cancelled("soup cancelled between ingredients")
        candidate = weighted_merge([states[i] for i in (*ingredients, index)], [1.0] * (len(ingredients) + 1))
        value = score(candidate)
        kept = value >= best
        tried.append({"model": index, "score": value, "kept": kept})
        if kept:
            ingredients.append(index)
            best, soup = value, candidate
    return Soup(ingredients, ranking, model_scores, tried, soup)
