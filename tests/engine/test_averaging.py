"""Checkpoint averaging: plans, the streaming accumulator, BatchNorm re-estimation, sweeps."""

import pytest
import torch

from tests.support.engine_setups import CNN, MLP, digits, state
from trajx.engine.bn import reestimate_batch_norm
from trajx.engine.merging.averaging import (
    Averager,
    Candidate,
    ema,
    lawa,
    nested_windows,
    uniform,
    weighted_average,
)
from trajx.engine.zoo import build_model, init_state_dict
from trajx.errors import Cancelled


def test_uniform_and_lawa_windows_end_at_the_newest_checkpoint():
    assert uniform(10, 3).indices == (7, 8, 9) and uniform(10, 3).weights == pytest.approx((1 / 3,) * 3)
    assert lawa(10, 3, every=4).indices == (1, 5, 9)
    with pytest.raises(ValueError, match="needs 1 <= last <= 10"):
        uniform(10, 11)
    with pytest.raises(ValueError, match="back to step -3, but the first checkpoint is at step 0"):
        lawa(10, 4, every=4)


def test_lawa_every_counts_optimizer_steps_and_uneven_windows_are_refused():
    steps = [0, 100, 200, 300, 350, 400, 450, 500]  # saved more often late in the run
    assert lawa(8, 3, every=100, steps=steps).indices == (3, 5, 7)  # steps 300, 400, 500
    assert lawa(8, 3, every=50, steps=steps).indices == (5, 6, 7)
    with pytest.raises(ValueError, match="needs a checkpoint at step 250; the nearest are at steps 200 and 300"):
        lawa(8, 6, every=50, steps=steps)
    with pytest.raises(ValueError, match=r"unevenly spaced \(steps 200, 300, 350\)"):
        uniform(5, 3, steps=steps[:5])
    assert uniform(8, 4, steps=steps).indices == (4, 5, 6, 7)  # evenly spaced: fine
    with pytest.raises(ValueError, match=r"checkpoints\[1\] is at step 100, checkpoints\[2\] at step 100"):
        ema(3, 0.9, steps=[0, 100, 100])


@pytest.mark.parametrize("warmup", [False, True])
def test_uncorrected_ema_weights_equal_the_recursive_average(warmup):
    values = torch.randn(30, generator=torch.Generator().manual_seed(0))
    average, beta = values[0].item(), 0.8
    for t in range(1, 30):
        decay = min(beta, (1 + t) / (10 + t)) if warmup else beta
        average = decay * average + (1 - decay) * values[t].item()
    candidate = ema(30, beta, warmup=warmup, bias_correction=False)
    closed = sum(w * values[i].item() for i, w in zip(candidate.indices, candidate.weights))
    assert closed == pytest.approx(average, rel=1e-9)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        ema(30, 1.0)


def test_bias_corrected_ema_is_adams_and_on_by_default():
    beta, n = 0.98, 50
    candidate = ema(n, beta)
    assert candidate.params["bias_correction"] is True
    # Adam: e starts at 0, e <- beta e + (1 - beta) theta_t over n updates, then / (1 - beta^n).
    adam = [(1 - beta) * beta ** (n - 1 - i) / (1 - beta**n) for i in range(n)]
    assert candidate.weights == pytest.approx(adam, rel=1e-9)
    assert candidate.weights[0] < 0.012 and ema(n, beta, bias_correction=False).weights[0] > 0.37


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_over_uneven_steps_is_the_per_step_average(warmup):
    """Checkpoint i stands for the steps since checkpoint i - 1: the closed form equals an EMA
    updated at every optimizer step with the newest saved weights."""
    steps = [3, 5, 6, 20, 21, 40]
    values = torch.randn(len(steps), generator=torch.Generator().manual_seed(1)).tolist()
    beta, average = 0.9, values[0]
    for t in range(steps[0] + 1, steps[-1] + 1):
        current = values[next(i for i, s in enumerate(steps) if s >= t)]
        decay = min(beta, (1 + t) / (10 + t)) if warmup else beta
        average = decay * average + (1 - decay) * current
    candidate = ema(len(steps), beta, warmup=warmup, bias_correction=False, steps=steps)
    closed = sum(w * values[i] for i, w in zip(candidate.indices, candidate.weights))
    assert closed == pytest.approx(average, rel=1e-9)
    far = ema(len(steps), 0.5, warmup=warmup, steps=[0, 1, 2, 3, 4, 10**9])
    assert far.indices == (5,)  # a billion steps later: only the newest weighs


class _Counted(dict):
    """A state dict that counts how many of its kind are alive."""

    alive = 0
    most = 0

    def __init__(self, *args):
        super().__init__(*args)
        _Counted.alive += 1
        _Counted.most = max(_Counted.most, _Counted.alive)

    def __del__(self):
        _Counted.alive -= 1


def test_streaming_average_is_the_exact_mean_with_one_checkpoint_alive():
    generator = torch.Generator().manual_seed(1)
    stored = [{"w": torch.randn(50, 20, generator=generator), "step": torch.tensor(i)} for i in range(12)]
    _Counted.alive = _Counted.most = 0
    states = (_Counted({k: v.clone() for k, v in s.items()}) for s in stored)
    averaged = weighted_average(states, [1 / 12] * 12, ["w"])
    torch.testing.assert_close(averaged["w"], torch.stack([s["w"] for s in stored]).mean(0))
    assert averaged["step"].item() == 11  # not averaged: taken from the newest
    assert _Counted.most == 1 and _Counted.alive == 0


def test_averaging_keeps_the_checkpoints_dtype():
    stored = [{"w": torch.full((3,), float(i), dtype=torch.bfloat16)} for i in range(4)]
    averaged = weighted_average(iter(stored), [0.25] * 4, ["w"])
    assert averaged["w"].dtype == torch.bfloat16 and averaged["w"].tolist() == [1.5] * 3


@pytest.fixture(scope="module")
def cnn_trajectory():
    """Five checkpoints of a short SGD run of the BatchNorm CNN on digits."""
    train, test = digits(as_images=True)
    model = build_model(*CNN)
    model.load_state_dict(init_state_dict(*CNN, 0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    checkpoints = []
    for step in range(100):
        batch = torch.arange(step * 64, step * 64 + 64) % len(train)
        loss = torch.nn.functional.cross_entropy(model(train.inputs[batch]), train.targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 19:
            checkpoints.append(state(model))
    return checkpoints, train, test


def test_batch_norm_statistics_are_re_estimated_never_averaged(cnn_trajectory):
    checkpoints, train, test = cnn_trajectory
    poisoned = [{n: torch.full_like(t, 7.0) if "running" in n else t for n, t in c.items()} for c in checkpoints]
    bn_inputs = [train.inputs[:128], train.inputs[128:256]]
    averager = Averager(build_model(*CNN), poisoned.__getitem__, bn_inputs, test)
    averaged = averager.build(uniform(5, 3))
    # What the mean parameters give when BatchNorm sees the data afresh.
    reference = build_model(*CNN)
    params = {n: torch.stack([c[n] for c in checkpoints[2:]]).mean(0) for n, _ in reference.named_parameters()}
    reference.load_state_dict({**checkpoints[-1], **params})
    reestimate_batch_norm(reference, bn_inputs)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(averaged[name], tensor, msg=name)
    assert not torch.allclose(averaged["features.0.bn.running_var"], torch.tensor(7.0))
    assert averager.score()["accuracy"] > 0.5


def test_a_sweep_scores_every_candidate_and_keeps_the_best(cnn_trajectory):
    checkpoints, train, test = cnn_trajectory
    averager = Averager(build_model(*CNN), checkpoints.__getitem__, [train.inputs[:256]], test)
    seen = []
    result = averager.run([uniform(5, k) for k in (1, 2, 3, 5)], on_candidate=lambda r, s: seen.append(r))
    assert [r.candidate.params["last"] for r in result.curve] == [1, 2, 3, 5] and seen == result.curve
    best = max(result.curve, key=lambda r: r.metrics["accuracy"])
    assert result.best is best
    torch.testing.assert_close(result.state, averager.build(best.candidate))


def test_several_candidates_without_eval_data_or_a_cancel_are_refused(cnn_trajectory):
    checkpoints, train, _ = cnn_trajectory
    averager = Averager(build_model(*CNN), checkpoints.__getitem__, [train.inputs[:64]])
    with pytest.raises(ValueError, match="eval or select data"):
        averager.run([uniform(5, 1), uniform(5, 2)])
    with pytest.raises(Cancelled):
        averager.run([uniform(5, 1)], should_cancel=lambda: True)
    only = averager.run([Candidate("newest", (4,), (1.0,))])
    assert only.best.metrics == {} and set(only.state) == set(checkpoints[0])


def test_mlp_average_of_identical_checkpoints_is_that_checkpoint():
    model = build_model(*MLP)
    init = init_state_dict(*MLP, 3)
    averager = Averager(model, lambda i: init, [torch.zeros(2, 64)])
    torch.testing.assert_close(averager.build(ema(6, 0.7)), init)


def test_a_sweep_of_nested_windows_reads_each_checkpoint_once(cnn_trajectory):
    checkpoints, train, test = cnn_trajectory
    reads = []

    def load(index):
        reads.append(index)
        return checkpoints[index]

    averager = Averager(build_model(*CNN), load, [train.inputs[:256]], test)
    grid = [uniform(5, 3), uniform(5, 1), uniform(5, 5), uniform(5, 3)]
    result = averager.run(grid)
    assert reads == [4, 3, 2, 1, 0]  # newest first, once each
    assert [r.candidate for r in result.curve] == grid  # in the order asked
    for one in result.curve:
        reads.clear()
        expected = averager.build(one.candidate)
        assert averager.score(expected) == pytest.approx(one.metrics, rel=1e-6)
    spaced = averager.run([lawa(5, 2, 2), lawa(5, 3, 2)])
    assert reads[-3:] == [4, 2, 0] and spaced.best.candidate in (lawa(5, 2, 2), lawa(5, 3, 2))
    first = max(range(4), key=lambda i: (result.curve[i].score(), -i))
    assert result.best is result.curve[first]


def test_nested_windows_are_recognised_only_for_plain_means_of_nested_windows():
    assert nested_windows([uniform(9, 2), uniform(9, 7)]) and nested_windows([lawa(9, 2, 3), lawa(9, 3, 3)])
    assert not nested_windows([uniform(9, 2)])
    assert not nested_windows([ema(9, 0.5), ema(9, 0.9)])
    assert not nested_windows([lawa(9, 2, 2), lawa(9, 3, 3)])
