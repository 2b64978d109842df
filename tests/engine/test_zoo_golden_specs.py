"""The zoo's permutation specs are pinned: same groups, same axes, same repeats.

`golden/zoo_specs.json` was written by the torch.fx tracer (commit f5046ee) before spec
derivation moved to torch.export; any tracer must reproduce it exactly.
"""

import json
from pathlib import Path

import pytest
import torch

from trajx.engine.trace import derive_spec
from trajx.engine.zoo import build_model, example_input

GOLDEN = json.loads((Path(__file__).parent / "golden" / "zoo_specs.json").read_text())


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_zoo_spec_matches_the_pinned_one(case):
    expected = GOLDEN[case]
    torch.manual_seed(0)
    model = build_model(expected["arch"], expected["config"])
    spec = derive_spec(model, example_input(expected["arch"], expected["config"], batch=3))
    assert spec.to_json() == expected["spec"]
    assert {g.name: g.size for g in spec.groups} == expected["groups"]
