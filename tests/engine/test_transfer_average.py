"""A transfer's averaged result: the mean of its last k steps, BatchNorm re-estimated."""

import pytest
import torch

from tests.support.engine_setups import cnn_setup
from trajx.engine.batches import BatchSampler
from trajx.engine.bn import reestimate_batch_norm
from trajx.engine.metrics import evaluate
from trajx.engine.options import TransferOptions
from trajx.engine.transfer.gmt import transfer
from trajx.job_spec import parse_job_spec


@pytest.fixture(scope="module")
def cnn():
    return cnn_setup()


def test_average_is_the_mean_of_the_last_steps_with_bn_re_estimated(cnn):
    params = TransferOptions(steps=6, batch_size=128, device="cpu", bn_batches=2)
    result = transfer(cnn.model(), cnn.spec, cnn.source, [cnn.init(1)], cnn.train, params,
                      eval_data=cnn.test, keep_trajectory=True, average_last=3)
    target = result.targets[0]
    model = cnn.model()
    names = [n for n, _ in model.named_parameters()]
    mean = {n: torch.stack([s[n] for s in target.trajectory[-3:]]).mean(0) for n in names}
    for name in names:
        torch.testing.assert_close(target.average[name], mean[name], msg=name)
    # Statistics are those of the averaged weights, not an average of statistics.
    model.load_state_dict({**target.last, **mean})
    sampler = BatchSampler(len(cnn.train), 128, torch.Generator().manual_seed(params.seed))
    reestimate_batch_norm(model, [cnn.train.batch(i, "cpu")[0] for i in sampler.draw_many(2)])
    torch.testing.assert_close(target.average["features.0.bn.running_mean"],
                               model.state_dict()["features.0.bn.running_mean"])
    assert target.average_metrics == pytest.approx(evaluate(model, cnn.test, 4 * 128, "cpu"), rel=1e-5)


def test_without_the_option_there_is_no_average(cnn):
    params = TransferOptions(steps=2, batch_size=128, device="cpu")
    target = transfer(cnn.model(), cnn.spec, cnn.source, [cnn.init(1)], cnn.train, params).targets[0]
    assert target.average is None and target.average_metrics is None


def test_a_window_longer_than_the_transfer_is_refused():
    spec = {"arch": {"name": "mlp"}, "source": ["a", "b"], "targets": [{"seed": 1}], "train_data": "d",
            "params": {"steps": 4}, "outputs": {"average": {"last": 5}}}
    with pytest.raises(ValueError, match="outputs.average.last is 5 but the transfer has only params.steps=4"):
        parse_job_spec(spec)
