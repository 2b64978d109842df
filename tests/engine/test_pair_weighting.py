"""pair_weighting "unit": gradient pairs scaled to unit norms (the pre-trained scenario's setting)."""

import pydantic
import pytest
import torch

from tests.support.engine_setups import mlp_setup
from trajx.engine.options import TransferOptions
from trajx.engine.transfer.gmt import transfer
from trajx.engine.transfer.methods import FGMT, GMT
from trajx.executors.transfer import engine_options
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


def test_pair_weighting_is_a_validated_job_parameter(mlp):
    for unknown in ("cosine", "auto"):  # the executor resolves "auto" before the engine runs
        with pytest.raises(ValueError, match=f"unknown pair_weighting '{unknown}'"):
            fgmt(mlp, pair_weighting=unknown)
    with pytest.raises(pydantic.ValidationError, match="pair_weighting"):
        TransferParams(pair_weighting="cosine")
    assert engine_options(TransferParams(), torch.device("cpu"), "unit").pair_weighting == "unit"
    assert TransferParams().pair_weighting == "auto" and TransferOptions().pair_weighting == "none"
