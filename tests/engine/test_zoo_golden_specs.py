"""The zoo's permutation specs are pinned: same groups, same axes, same repeats.

`golden/zoo_specs.json` was written by the torch.fx tracer (commit f5046ee) before spec
derivation moved to torch.export; any tracer must reproduce it exactly.
"""

import json
from pathlib import Path

import pytest
import torch

from trajx.engine.permutation.spec import spec_from_param_groups
from trajx.engine.permutation.trace import derive_param_groups
from trajx.engine.zoo import build_model, example_input

GOLDEN = json.loads((Path(__file__).parent / "golden" / "zoo_specs.json").read_text())


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_zoo_spec_matches_the_pinned_one(case):
    expected = GOLDEN[case]
    torch.manual_seed(0)
    model = build_model(expected["arch"], expected["config"])
    # derivation only: the self-check of these specs is test_trace's (float64 on 11 M
    # parameters would dominate this file's time)
    refs = derive_param_groups(model, example_input(expected["arch"], expected["config"], batch=3))
    spec = spec_from_param_groups(refs, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    assert spec.to_json() == expected["spec"]
    assert {g.name: g.size for g in spec.groups} == expected["groups"]
