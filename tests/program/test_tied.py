"""Tied weights (one tensor under two names, an embedding shared with the output head):
kept tied through export, spec, transfer and checkpoint loading, or refused naming both."""

import json

import pytest
import torch
from torch import nn

from trajx.engine.batches import Dataset
from trajx.engine.losses import NextToken
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import transfer
from trajx.errors import InvalidInput
from trajx.io import validate_checkpoint
from trajx.program.build import export_program, load_program
from trajx.program.document import check_program

VOCAB, WIDTH = 11, 8


class TiedLM(nn.Module):
    """A next-token model whose output head is its token embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, WIDTH)
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.head.weight = self.tok_emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.tok_emb(ids))))


def _state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in TiedLM().state_dict().items()}


@pytest.fixture(scope="module")
def program():
    torch.manual_seed(0)
    document = json.loads(json.dumps(export_program(TiedLM(), (torch.randint(0, VOCAB, (2, 5)),),
                                                    task="causal-lm")))
    return document, load_program(document)


def test_a_program_records_tied_names_and_its_module_holds_one_tensor(program):
    document, module = program
    assert document["tied"] == [["tok_emb.weight", "head.weight"]]
    assert module.tok_emb.weight is module.head.weight
    spec = derive_spec(module, torch.randint(0, VOCAB, (2, 5)))
    embedding, head = spec.param_groups["tok_emb.weight"], spec.param_groups["head.weight"]
    assert embedding == head and embedding[1] is not None  # one permutation, not an unused copy


def test_a_transfer_through_a_program_keeps_the_tied_names_one_tensor(program):
    _, module = program
    ids = torch.randint(0, VOCAB, (16, 5), generator=torch.Generator().manual_seed(1))
    spec = derive_spec(module, ids[:2])
    theta0 = _state(0)
    theta_t = {k: v + 0.1 * torch.randn_like(v) for k, v in theta0.items()}
    theta_t["head.weight"] = theta_t["tok_emb.weight"]  # trained tied: one tensor
    result = transfer(module, spec, [theta0, theta_t], [_state(1)], Dataset(ids, ids.clone()),
                      TransferOptions(steps=2, batch_size=8, device="cpu"), task=NextToken())
    last = result.targets[0].last
    assert torch.equal(last["tok_emb.weight"], last["head.weight"])
    assert not torch.equal(last["tok_emb.weight"], _state(1)["tok_emb.weight"])  # it moved


def test_a_checkpoint_with_one_of_the_tied_names_fills_the_other_from_it(program):
    _, module = program
    saved = _state(3)
    only_head = {k: v for k, v in saved.items() if k != "tok_emb.weight"}  # as safetensors' save_model writes
    loaded = validate_checkpoint(only_head, module.state_dict(), "source[0]")
    assert torch.equal(loaded["tok_emb.weight"], saved["head.weight"])
    assert torch.equal(loaded["head.weight"], saved["head.weight"])


def test_a_checkpoint_with_two_different_copies_of_a_tied_tensor_is_refused_naming_both(program):
    _, module = program
    diverged = _state(3)
    diverged["head.weight"] = diverged["head.weight"] + 0.5
    with pytest.raises(InvalidInput) as refused:
        validate_checkpoint(diverged, module.state_dict(), "source[1]")
    assert refused.value.code == "checkpoint_mismatch"
    assert "'tok_emb.weight' and 'head.weight'" in refused.value.message


def test_tied_groups_naming_unknown_or_repeated_names_are_refused(program):
    document, _ = program
    for tied, words in (([["tok_emb.weight", "nope"]], "do not take"),
                        ([["tok_emb.weight", "head.weight"], ["head.weight", "fc.weight"]], "repeats"),
                        ([["fc.weight"]], "2 to 64")):
        with pytest.raises(InvalidInput, match=words):
            check_program({**document, "tied": tied})
