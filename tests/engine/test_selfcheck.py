"""The spec self-check: a tolerance that follows the precision the model computes in,
reported as a ratio to it, and refusals that name the group and the parameter at fault."""

import importlib.util

import pytest
import torch
from torch import nn

from tests.engine.hf_configs import LLAMA
from trajx.engine.permutation.selfcheck import FLOAT64_TOLERANCE, check_spec, tolerance
from trajx.engine.permutation.spec import spec_from_param_groups
from trajx.engine.permutation.trace import derive_spec
from trajx.errors import UnsupportedModel

needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="transformers is not installed")


class _Float32Norm(nn.Module):
    """An MLP whose norm computes in float32 whatever its input (like Llama's RMSNorm)."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(6, 64), nn.Linear(64, 3)
        self.scale = nn.Parameter(torch.ones(64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.up(x)).float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.scale.float()
        return self.down(h.to(x.dtype))


def test_tolerance_follows_the_least_precise_dtype_the_model_computes_in():
    torch.manual_seed(0)
    model, x = _Float32Norm(), torch.randn(4, 6)
    spec = derive_spec(model, x)
    assert spec.self_check.computes_in == "float32"
    assert spec.self_check.tolerance == tolerance(torch.float32) > FLOAT64_TOLERANCE
    assert 0 < spec.self_check.ratio <= 1
    plain = derive_spec(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), x)
    assert plain.self_check.computes_in == "float64"
    assert plain.self_check.tolerance == FLOAT64_TOLERANCE


def test_a_wrong_spec_is_blamed_on_the_spec_naming_group_and_parameter():
    torch.manual_seed(0)
    model, x = _Float32Norm(), torch.randn(4, 6)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    refs = derive_spec(model, x).to_json()
    hidden = refs["up.bias"][0]
    with pytest.raises(UnsupportedModel) as info:  # the norm's scale must move with the hidden units
        check_spec(model, spec_from_param_groups({**refs, "scale": [None]}, shapes), x,
                   torch.Generator().manual_seed(0))
    details = info.value.details
    assert info.value.code == "spec_self_check_failed"
    assert details["group"] == hidden and details["parameter"] == "scale"
    assert details["computes_in"] == "float32" and details["ratio"] > 1e3
    assert f"group {hidden!r} (up) (axis 0 of 'scale' must move with it)" in info.value.message
    assert "even with every op computed in float64, so the spec is at fault" in info.value.message


@pytest.mark.slow
@needs_transformers
@pytest.mark.parametrize("tied", [False, True])
def test_hugging_face_llama_is_accepted_from_every_seed(tied):
    """Llama's RMSNorm computes in float32: a fixed float64 tolerance refused about half the seeds."""
    from trajx.engine.zoo.hf import HFConfig, build, example

    config = HFConfig(**{**LLAMA, "hidden_size": 64, "intermediate_size": 128, "vocab_size": 256,
                         "tie_word_embeddings": tied})
    for seed in (1, 4):  # seeds a fixed float64 tolerance refused, tied and untied
        torch.manual_seed(seed)
        model = build(config)
        spec = derive_spec(model, example(config, 2))
        assert spec.self_check.computes_in == "float32" and spec.self_check.ratio <= 1
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
        embedding, head = spec.param_groups["model.embed_tokens.weight"], spec.param_groups["lm_head.weight"]
        assert embedding == head and head[1] is not None  # tied or not, both move with the residual stream


@needs_transformers
def test_groups_get_readable_labels_from_their_module_paths_stable_across_runs():
    from tests.engine.hf_configs import GPT2
    from trajx.engine.zoo import build_model, example_input

    labels = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        spec = derive_spec(build_model("hf", GPT2), example_input("hf", GPT2))
        labels.append(dict(spec.labels))
    assert labels[0] == labels[1]
    assert sorted(labels[0].values()) == ["residual", "transformer.h.0.attn.heads", "transformer.h.0.mlp",
                                          "transformer.h.1.attn.heads", "transformer.h.1.mlp"]
    assert labels[0]["P_transformer.wte.weight_1"] == "residual"  # names stay: explicit specs use them


def test_the_check_permutes_one_copy_of_the_state_in_place_and_puts_it_back(monkeypatch):
    # Holding a second permuted copy of a float64 model doubles the check's memory (a 1B model:
    # 8 GB more); the state is permuted in place and restored exactly instead.
    from trajx.engine.permutation import selfcheck

    torch.manual_seed(0)
    model, x = _Float32Norm(), torch.randn(4, 6)
    spec = derive_spec(model, x)
    states, seen, selfcheck_state = [], [], []
    change = selfcheck._Run.change
    init = selfcheck._Run.__init__

    def keep_state(run, model, state, *args):
        selfcheck_state.append(state)
        init(run, model, state, *args)

    monkeypatch.setattr(selfcheck._Run, "__init__", keep_state)

    def spy(run, state):
        states.append(state is run.state)
        seen.append({n: t.clone() for n, t in state.items()})
        return change(run, state)

    monkeypatch.setattr(selfcheck._Run, "change", spy)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    assert check_spec(model, spec, x, torch.Generator().manual_seed(1)).ratio <= 1
    assert states and all(states)  # each permuted forward pass ran on the one state, not a copy
    kept = selfcheck_state[0]
    assert all(not torch.equal(s["up.weight"], kept["up.weight"]) for s in seen)  # each call saw it permuted
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    # Put back bit for bit after a permuted forward pass.
    snapshot = {n: t.clone() for n, t in kept.items()}
    monkeypatch.setattr(selfcheck._Run, "change", change)
    monkeypatch.setattr(selfcheck._Run, "__init__", init)
    with torch.no_grad(), selfcheck.eval_mode(model), selfcheck._default_dtype(torch.float64):
        run = selfcheck._Run(model, kept, x.double(), selfcheck.nullcontext)
        assert selfcheck._permuted_change(run, spec, {g.name: torch.roll(torch.arange(g.size), 1)
                                                      for g in spec.groups}) > 0
    assert all(torch.equal(kept[n], t) for n, t in snapshot.items())
