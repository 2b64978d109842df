"""Models beyond the zoo: all-fixed specs refuse matching, untraceable models run on an
explicit spec, Hugging Face models export."""

import importlib.util

import pytest
import torch
from torch import nn

from tests.engine.invariance import assert_invariant
from trajx.engine.batches import Dataset
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import transfer
from trajx.engine.transfer.methods import STRATEGIES, Naive
from trajx.errors import UnsupportedModel
from trajx.method_registry import TRANSFER_METHODS


class _InputConcat(nn.Module):
    """The hidden features are concatenated with the input before the head: the cat
    fixes their order, so no axis of this model can move."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.head = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([torch.relu(self.fc(x)), x], dim=-1))


def _data(count: int = 16) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    return Dataset(torch.randn(count, 4, generator=generator), torch.randint(0, 3, (count,), generator=generator))


def _trajectory(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    origin = {k: v.clone() for k, v in model.state_dict().items()}
    return [origin, {k: v + 0.1 for k, v in origin.items()}]


@pytest.mark.parametrize("method", sorted(name for name, cls in STRATEGIES.items() if cls.needs_groups))
def test_a_matching_method_on_a_model_with_no_group_names_what_fixed_the_axes(method):
    torch.manual_seed(0)
    model = _InputConcat()
    spec = derive_spec(model, torch.randn(2, 4))
    assert spec.groups == ()
    assert spec.fixed_axes["fc.weight[0]"] == "op aten.cat.default at node 'cat'"
    source, target = _trajectory(model), _InputConcat().state_dict()
    with pytest.raises(UnsupportedModel) as info:
        transfer(model, spec, source, [target], _data(), TransferOptions(steps=2, batch_size=8, device="cpu"),
                 method=STRATEGIES[method](**{need: [target] for need in TRANSFER_METHODS[method].needs}))
    assert info.value.code == "no_permutation_groups"
    assert "fc.weight[0]: op aten.cat.default at node 'cat'" in info.value.message
    assert info.value.details["method"] == method


def test_naive_still_runs_on_a_model_with_no_group():
    torch.manual_seed(0)
    model = _InputConcat()
    spec = derive_spec(model, torch.randn(2, 4))
    source, target = _trajectory(model), _InputConcat().state_dict()
    result = transfer(model, spec, source, [target], _data(), TransferOptions(steps=2, batch_size=8, device="cpu"),
                      method=Naive())
    assert all(torch.allclose(result.targets[0].last[k], target[k] + 0.1) for k in target)


class _DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x))
        return self.head(h if h.sum() > 0 else -h)


def test_an_explicit_spec_naming_every_tensor_is_used_without_exporting():
    model, x = _DataDependent(), torch.randn(4, 3)
    with pytest.raises(UnsupportedModel) as info:
        derive_spec(model, x)
    assert info.value.code == "untraceable"
    explicit = {"fc.weight": ["hidden", None], "fc.bias": ["hidden"],
                "head.weight": [None, "hidden"], "head.bias": [None]}
    spec = derive_spec(model, x, explicit)
    assert [(g.name, g.size) for g in spec.groups] == [("hidden", 5)]
    assert_invariant(model, spec, x)
    with pytest.raises(UnsupportedModel) as wrong:  # still proven by the self-check
        derive_spec(model, x, {**explicit, "fc.bias": [None]})
    assert wrong.value.code == "spec_self_check_failed"


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_a_hugging_face_gpt2_from_a_config_exports_and_moves_its_heads():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=37, n_positions=8, n_embd=16, n_layer=1, n_head=4, use_cache=False)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    tokens = torch.randint(0, 37, (2, 6), generator=torch.Generator().manual_seed(0))
    spec = derive_spec(model, tokens)
    groups = spec.to_json()
    heads = groups["transformer.h.0.attn.c_attn.weight"][1]  # Conv1D: (in, out)
    assert heads is not None and heads.startswith("3*") and heads.endswith("*4")
    assert groups["transformer.h.0.mlp.c_fc.weight"][1] is not None


def test_an_exported_program_gives_the_spec_of_the_model_it_came_from():
    # an uploaded model arrives as a torch.export program; its module() is what runs
    from trajx.engine.permutation.trace import export_model
    from trajx.engine.zoo import build_model, example_input

    config = {"d_model": 8, "num_heads": 2, "num_layers": 1, "image_size": 8}
    torch.manual_seed(0)
    model, x = build_model("transformer", config), example_input("transformer", config, batch=2)
    program = export_model(model, x)
    spec = derive_spec(program.module(), x, program=program)
    assert spec.to_json() == derive_spec(model, x).to_json()
    assert len(spec.groups) == 3
