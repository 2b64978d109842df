"""Rules for recurrent layers and the ops real models use (outer, repeat, pads, grouped
convolutions, ...): each derived spec is proven by the self-check, holds for a planted
permutation, and weight matching recovers that permutation."""

import pytest
import torch
from torch import nn

from tests.engine.invariance import assert_invariant
from trajx.engine.matching.descent import PairBank, match
from trajx.engine.permutation.spec import apply_permutation
from trajx.engine.permutation.trace import derive_spec

# torch's own note on nn.RNN's flat weight list during export
pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes self.rnn._flat_weights:UserWarning")


class _Sequence(nn.Module):
    """A recurrent layer between a projection in and a head out (its output, or a cell's)."""

    def __init__(self, rnn: nn.Module, size: int, state: bool = False) -> None:
        super().__init__()
        self.embed, self.rnn, self.head, self.state = nn.Linear(3, 6), rnn, nn.Linear(size, 2), state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rnn(torch.tanh(self.embed(x)))
        if isinstance(out, tuple):  # (output, h_n) of a layer or (h, c) of an LSTM cell
            out = out[1] if self.state else out[0]
            if isinstance(out, tuple):
                out = out[0]
        return self.head(out)


RECURRENT = {  # case -> (layer, hidden axis length the head reads, input shape, rows in gate blocks)
    "gru": (lambda: nn.GRU(6, 5), 5, (4, 2, 3), 3),
    "gru-2-layers-batch-first-bidirectional": (
        lambda: nn.GRU(6, 5, num_layers=2, batch_first=True, bidirectional=True), 10, (2, 4, 3), 3),
    "lstm": (lambda: nn.LSTM(6, 5, num_layers=2), 5, (4, 2, 3), 4),
    "lstm-unbatched-no-bias": (lambda: nn.LSTM(6, 5, num_layers=2, bias=False), 5, (4, 3), 4),
    "rnn-relu": (lambda: nn.RNN(6, 5, nonlinearity="relu"), 5, (4, 2, 3), 1),
    "gru-cell": (lambda: nn.GRUCell(6, 5), 5, (2, 3), 3),
    "lstm-cell": (lambda: nn.LSTMCell(6, 5), 5, (2, 3), 4),
    "rnn-cell": (lambda: nn.RNNCell(6, 5), 5, (2, 3), 1),
}


def _planted_permutation_is_recovered(model: nn.Module, spec) -> None:
    source = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    planted = spec.random(torch.Generator().manual_seed(3))
    target = apply_permutation(spec, planted, source)
    found = match(spec, PairBank.from_pairs([(target, source)], source)).perm
    assert all(torch.equal(found[g], planted[g]) for g in planted)


@pytest.mark.parametrize("case", RECURRENT)
def test_recurrent_layers_move_hidden_units_alike_in_every_gate_block(case):
    torch.manual_seed(0)
    layer, size, shape, gates = RECURRENT[case]
    model, x = _Sequence(layer(), size), torch.randn(*shape)
    spec = derive_spec(model, x)
    hh = next(n for n in spec.param_groups if "weight_hh" in n)
    hidden = spec.param_groups[hh][1]
    assert hidden is not None and spec.group(hidden).size == 5
    assert spec.param_groups[hh][0] == hidden and spec.tile(hh, 0) == gates  # gate blocks, units alike
    assert all(spec.param_groups[n][0] == hidden for n in spec.param_groups if n.startswith("rnn."))
    assert_invariant(model, spec, x)
    _planted_permutation_is_recovered(model, spec)


def test_a_recurrent_layers_final_state_moves_with_the_same_units():
    torch.manual_seed(0)
    model, x = _Sequence(nn.GRU(6, 5, num_layers=2), 5, state=True), torch.randn(4, 2, 3)
    spec = derive_spec(model, x)
    assert spec.param_groups["head.weight"][1] == spec.param_groups["rnn.weight_hh_l1"][1] is not None
    assert_invariant(model, spec, x)


def test_an_lstm_with_projections_is_refused_naming_the_fix():
    model, x = _Sequence(nn.LSTM(6, 5, proj_size=3), 3), torch.randn(4, 2, 3)
    with pytest.raises(Exception) as info:
        derive_spec(model, x)
    assert "proj_size" in str(info.value) and "permutation_spec" in str(info.value)


class _Ops(nn.Module):
    """Hidden units passing through ops real models use."""

    def __init__(self, case: str) -> None:
        super().__init__()
        self.case = case
        self.up = nn.Conv1d(4, 8, 1)
        self.mix = nn.Conv1d(8, 8, 3, groups=2 if case == "grouped-conv" else 1)
        self.down = nn.Linear(8 if case != "repeat" else 16, 3)
        self.freq = nn.Parameter(torch.randn(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, 4, L]
        h = torch.relu(self.up(x))
        if self.case == "grouped-conv":
            h = self.mix(h)
        elif self.case in ("pad", "reflection-pad"):
            h = self.mix(nn.functional.pad(h, (1, 1), mode="reflect" if self.case == "reflection-pad" else "constant"))
        elif self.case == "outer":  # a frequency table per position, as in rotary embeddings
            h = h * torch.outer(torch.arange(h.shape[-1], dtype=h.dtype), self.freq).T.cos()
        pooled = h.mean(-1)
        if self.case == "repeat":
            pooled = pooled.repeat(1, 2)
        elif self.case == "repeat-interleave":  # every unit twice in place, then their mean
            pooled = pooled.repeat_interleave(2, dim=-1).view(-1, 8, 2).mean(-1)
        elif self.case == "where":
            pooled = torch.where(pooled > 0, pooled, 0.0)
        return self.down(pooled)


@pytest.mark.parametrize("case, op", [
    ("outer", "aten.outer.default"), ("pad", "aten.pad.default"), ("reflection-pad", "aten.pad.default"),
    ("grouped-conv", "aten.conv1d.default"), ("repeat", "aten.repeat.default"),
    ("repeat-interleave", "aten.repeat_interleave.self_int"), ("where", "aten.where.ScalarOther"),
])
def test_ops_real_models_use_keep_the_hidden_units_movable(case, op):
    torch.manual_seed(0)
    model, x = _Ops(case), torch.randn(2, 4, 5)
    program = torch.export.export(model, (x,), strict=False)
    assert op in {str(n.target) for n in program.graph.nodes}
    spec = derive_spec(model, x)
    assert spec.param_groups["up.weight"][0] is not None
    assert_invariant(model, spec, x)
    _planted_permutation_is_recovered(model, spec)
