"""A program decomposed to core ATen (what an uploaded program may hold) gives the same
spec as the graph `torch.export` returns: the core rules (addmm, convolution, native
batch/layer norm, bmm, _softmax, ...) agree with the high-level ones."""

import pytest
import torch
from torch import nn

from tests.engine.test_trace_attention import CASES, _Attention, _Block, _input
from trajx.engine.permutation.trace import derive_spec, export_model
from trajx.engine.zoo import build_model, example_input

# run_decompositions pickles tree specs through a deprecated torch path (torch's own warning)
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

ZOO = {
    "mlp-batchnorm": ("mlp", {"in_features": 12, "hidden": [8, 8], "num_classes": 3, "norm": "batchnorm"}),
    "cnn": ("cnn", {"channels": [4, 4, 8, 8], "fc": [16], "image_size": 8, "in_channels": 1}),
    "transformer-cls": ("transformer", {"d_model": 8, "num_heads": 2, "num_layers": 1, "image_size": 8,
                                        "pool": "cls"}),
}


def _model(case: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if case in ZOO:
        name, config = ZOO[case]
        return build_model(name, config), example_input(name, config, batch=3)
    if case == "multihead-attention":
        return _Block(nn.MultiheadAttention(16, 4, batch_first=True)), _input()
    return _Block(_Attention(*CASES[case])), _input()


@pytest.mark.parametrize("case", [*ZOO, "multihead-attention", "gqa-sdpa", "fused-manual-causal"])
def test_a_core_aten_program_gets_the_same_spec(case):
    model, x = _model(case)
    expected = derive_spec(model, x)
    assert expected.groups
    program = export_model(model, x).run_decompositions()
    spec = derive_spec(program.module(), x, program=program)
    assert spec.to_json() == expected.to_json()
