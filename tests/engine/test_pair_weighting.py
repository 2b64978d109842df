"""Options for transfers between pre-trained backbones: unit-normed pairs and the anchor pair."""

import pydantic
import pytest

from tests.support.engine_setups import mlp_setup
from trajx.engine.merging.alignment import matched_parameters, weight_matching
from trajx.engine.options import TransferOptions
from trajx.engine.transfer.gmt import transfer
from trajx.engine.transfer.methods import FGMT, GMT
from trajx.job_spec import TransferParams


@pytest.fixture(scope="module")
def mlp():
    return mlp_setup()


def fgmt(setup, method=FGMT, **options):
    params = TransferOptions(steps=5, batch_size=128, device="cpu", **options)
    return transfer(setup.model(), setup.spec, setup.source, [setup.init(1)], setup.train, params,
                    method=method(), eval_data=None).targets[0]


@pytest.mark.parametrize("method", [FGMT, GMT])
def test_unit_pairs_match_on_a_sum_of_cosines(mlp, method):
    raw, unit = fgmt(mlp, method), fgmt(mlp, method, pair_weighting="unit")
    for pairs, step in enumerate(unit.steps, start=1):
        assert abs(step["objective"]) <= pairs + 1e-6  # each pair's term is a cosine
    assert unit.steps[-1]["objective"] > 2 * raw.steps[-1]["objective"]  # late, small pairs count
    assert any(not (raw.permutation[g] == unit.permutation[g]).all() for g in raw.permutation)


def test_a_dominant_anchor_is_weight_matching_of_the_two_inits(mlp):
    anchored = fgmt(mlp, pair_weighting="unit", anchor_weight=1e6)
    aligned = weight_matching(mlp.spec, mlp.init(1), mlp.source[0], matched_parameters(mlp.model(), mlp.spec))
    assert all((anchored.permutation[g] == aligned[g]).all() for g in aligned)
    unanchored = fgmt(mlp, pair_weighting="unit")
    assert any(not (unanchored.permutation[g] == aligned[g]).all() for g in aligned)


def test_an_anchor_needs_unit_pairs(mlp):
    with pytest.raises(ValueError, match="anchor_weight > 0 needs pair_weighting 'unit'"):
        fgmt(mlp, anchor_weight=1.0)
    with pytest.raises(ValueError, match="unknown pair_weighting"):
        fgmt(mlp, pair_weighting="cosine")
    with pytest.raises(pydantic.ValidationError, match="needs params.pair_weighting 'unit'"):
        TransferParams(anchor_weight=1.0)
    with pytest.raises(pydantic.ValidationError):
        TransferParams(pair_weighting="unit", anchor_weight=-1.0)
    assert TransferParams(pair_weighting="unit", anchor_weight=2.0).anchor_weight == 2.0
