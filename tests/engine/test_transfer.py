"""GMT/FGMT transfer on real digits data: quality, costs, BN, determinism, control flow."""

import math
import threading
from itertools import pairwise

import pytest
import torch
from torch import nn

from tests.support.engine_setups import cnn_setup, mlp_setup
from trajx.engine.batches import Dataset
from trajx.engine.bn import reestimate_batch_norm
from trajx.engine.matching.solvers import scipy_solver
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.spec import apply_permutation
from trajx.engine.transfer import gmt as transfer_module
from trajx.engine.transfer.gmt import STEP_TIMING_KEYS, transfer
from trajx.engine.transfer.methods import STRATEGIES, Naive, Oracle
from trajx.engine.transfer.schedule import plan_trajectory, schedule
from trajx.errors import Cancelled, NonFiniteLoss


@pytest.fixture(scope="module")
def mlp():
    return mlp_setup()


@pytest.fixture(scope="module")
def cnn():
    return cnn_setup()


def run(setup, method="fgmt", targets=(1,), steps=8, **kwargs):
    options = TransferOptions(**{"steps": steps, "batch_size": 128, "device": "cpu",
                                 **kwargs.pop("params", {})})
    inits = [setup.init(seed) for seed in targets]
    return transfer(setup.model(), setup.spec, setup.source, inits, setup.train, options,
                    method=STRATEGIES[method](), eval_data=kwargs.pop("eval_data", setup.test), **kwargs)


def without_timings(steps):
    return [{k: v for k, v in metrics.items() if k not in STEP_TIMING_KEYS} for metrics in steps]


# -- schedules -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["uniform", "cosine"])
def test_schedules_start_at_zero_end_at_one_and_never_go_back(name):
    lam = schedule(name, 30)
    assert lam[0] == 0.0 and lam[-1] == 1.0 and len(lam) == 31
    assert all(b > a for a, b in pairwise(lam))


def test_cosine_schedule_takes_big_steps_first():
    lam = schedule("cosine", 10)
    steps = [b - a for a, b in pairwise(lam)]
    assert steps == sorted(steps, reverse=True)
    assert lam[1] == pytest.approx(2 / sum(1 + math.cos(math.pi * t / 10) for t in range(10)))


def test_segments_share_the_steps_and_visit_every_checkpoint():
    points = plan_trajectory("uniform", 5, checkpoints=3)
    assert [(p.segment, p.fraction) for p in points] == [
        (0, 0.0), (0, 1 / 3), (0, 2 / 3), (0, 1.0), (1, 0.5), (1, 1.0)]
    exact = plan_trajectory("cosine", 2, checkpoints=3)
    assert [(p.segment, p.fraction) for p in exact] == [(0, 0.0), (0, 1.0), (1, 1.0)]
    with pytest.raises(ValueError, match="cannot visit"):
        plan_trajectory("uniform", 1, checkpoints=3)


# -- quality and methods ---------------------------------------------------------------

def test_fgmt_beats_naive_by_a_wide_margin(mlp):
    naive = run(mlp, "naive").targets[0].steps[-1]["accuracy"]
    fgmt = run(mlp, "fgmt").targets[0].steps[-1]["accuracy"]
    assert naive < 0.3
    assert fgmt > naive + 0.3


def test_gmt_recomputes_every_earlier_pair_and_stays_good(mlp):
    result = run(mlp, "gmt", steps=5)
    # Source gradients are reused: G·T on the source side plus G·T(T+1)/2 on the target.
    assert result.timings.backward_passes == 5 + 15
    assert result.timings.matching_solves == 5
    assert result.targets[0].steps[-1]["accuracy"] > 0.4


def test_oracle_recovers_the_permutation_of_a_permuted_twin(mlp):
    perm = mlp.spec.random(torch.Generator().manual_seed(4))
    twin_init = apply_permutation(mlp.spec, perm, mlp.source[0])
    twin_trained = apply_permutation(mlp.spec, perm, mlp.source[-1])
    result = transfer(mlp.model(), mlp.spec, mlp.source, [twin_init], mlp.train,
                      TransferOptions(steps=3, device="cpu"), method=Oracle([twin_trained])).targets[0]
    # Units that never moved (dead ReLUs) may be matched in any order: compare the states.
    assert all(torch.allclose(result.last[n], twin_trained[n], atol=1e-6) for n in twin_trained)
    group = mlp.spec.param_groups["blocks.0.fc.bias"][0]
    moved = (mlp.source[-1]["blocks.0.fc.bias"] != mlp.source[0]["blocks.0.fc.bias"]).nonzero().flatten()
    assert torch.equal(result.permutation[group][torch.argsort(perm[group])][moved], moved)


def test_fgmt_recovers_a_permuted_twin_end_to_end(mlp):
    planted = mlp.spec.random(torch.Generator().manual_seed(11))
    twin = apply_permutation(mlp.spec, planted, mlp.source[0])
    result = transfer(mlp.model(), mlp.spec, mlp.source, [twin], mlp.train,
                      TransferOptions(steps=4, batch_size=128, device="cpu")).targets[0]
    # The twin's transferred model is the source's endpoint permuted: same outputs.
    transferred, endpoint = mlp.model().eval(), mlp.model().eval()
    transferred.load_state_dict(result.last)
    endpoint.load_state_dict(mlp.source[-1])
    with torch.no_grad():
        assert torch.allclose(transferred(mlp.test.inputs), endpoint(mlp.test.inputs), atol=1e-5)
    for group in mlp.spec.groups:
        axis = group.axes[0]
        displacement = (mlp.source[-1][axis.param] - mlp.source[0][axis.param]).movedim(axis.dim, 0)
        distance = displacement.reshape(group.size, -1).norm(dim=1)
        # Nearly dead units get next to no gradient, so any order of them is as good.
        moved = (distance > distance.median() / 4).nonzero().flatten()
        assert len(moved) > group.size // 2  # most units
        # Where each moving source unit landed in the twin, FGMT put that same unit.
        landed = torch.argsort(planted[group.name])[moved]
        assert torch.equal(result.permutation[group.name][landed], moved)


def test_ensemble_shares_source_gradients(mlp):
    result = run(mlp, "fgmt", targets=(1, 2), steps=4, eval_data=None)
    assert result.timings.backward_passes == 4 + 2 * 4
    assert len(result.targets) == 2
    assert not torch.equal(result.targets[0].last["head.weight"], result.targets[1].last["head.weight"])


def test_every_step_records_its_seconds_and_they_add_up_to_the_totals(mlp):
    result = run(mlp, "gmt", targets=(1, 2), steps=3)
    steps = [m for target in result.targets for m in target.steps]
    assert all(set(STEP_TIMING_KEYS) <= set(m) for m in steps)
    assert all(m[key] > 0 for m in steps for key in STEP_TIMING_KEYS)
    timings = result.timings
    # The source gradient of a step is shared by both targets: count it once.
    source = sum(m["source_gradient_seconds"] for m in result.targets[0].steps)
    assert sum(m["gradient_seconds"] for m in steps) + source == pytest.approx(timings.gradient_seconds)
    assert sum(m["matching_seconds"] for m in steps) == pytest.approx(timings.matching_seconds)
    assert sum(m["evaluation_seconds"] for m in steps) == pytest.approx(timings.evaluation_seconds)
    assert [m["source_gradient_seconds"] for m in result.targets[0].steps] == \
        [m["source_gradient_seconds"] for m in result.targets[1].steps]


def test_best_step_is_tracked_on_eval_data(mlp):
    target = run(mlp, "fgmt", steps=6).targets[0]
    accuracies = [s["accuracy"] for s in target.steps]
    assert target.best_step == 1 + accuracies.index(max(accuracies))
    assert len(target.steps) == 6 and {"objective", "sweeps", "loss"} <= set(target.steps[-1])


def test_without_eval_data_best_is_last_and_trajectory_is_kept(mlp):
    target = run(mlp, "fgmt", steps=3, eval_data=None, keep_trajectory=True).targets[0]
    assert target.best_step == 3 and target.best is target.last
    assert len(target.trajectory) == 4
    assert torch.equal(target.trajectory[-1]["head.weight"], target.last["head.weight"])


def test_float_targets_use_mean_squared_error(mlp):
    inputs = mlp.train.inputs
    regression = Dataset(inputs, torch.nn.functional.one_hot(mlp.train.targets, 10).float())
    params = TransferOptions(steps=2, device="cpu")
    target = transfer(mlp.model(), mlp.spec, mlp.source, [mlp.init(1)],
                      regression, params, eval_data=regression).targets[0]
    assert set(target.steps[-1]) >= {"loss"} and "accuracy" not in target.steps[-1]


# -- BatchNorm -------------------------------------------------------------------------

def test_batch_norm_statistics_are_reestimated_not_transferred(cnn):
    target = run(cnn, "fgmt", steps=3).targets[0]
    for layer in ("features.0.bn", "features.1.bn"):
        assert target.last[f"{layer}.num_batches_tracked"] == TransferOptions().bn_batches
        assert not torch.allclose(target.last[f"{layer}.running_mean"],
                                  cnn.source[-1][f"{layer}.running_mean"])


def test_reestimation_is_the_plain_average_of_batch_statistics():
    layer = nn.BatchNorm1d(3, momentum=0.1)
    batches = [torch.randn(16, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    reestimate_batch_norm(layer, batches)
    expected = torch.stack([b.mean(0) for b in batches]).mean(0)
    assert torch.allclose(layer.running_mean, expected, atol=1e-6)
    assert layer.momentum == 0.1 and not layer.training


# -- buffers ---------------------------------------------------------------------------

class _Tempered(nn.Module):
    """A plug-in-like MLP whose persistent (non-BatchNorm) buffer scales its logits."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 32)
        self.head = nn.Linear(32, 10)
        self.register_buffer("temperature", torch.tensor(temperature))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x))) / self.temperature


def _tempered_state(seed: int, temperature: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {**_Tempered().state_dict(), "temperature": torch.tensor(temperature)}


def test_each_gradient_runs_with_its_own_model_buffers(mlp):
    from trajx.engine.permutation.trace import derive_spec

    spec = derive_spec(_Tempered(), mlp.train.inputs[:2])
    origin = _tempered_state(0, 1.0)
    source = [origin, {n: t + 0.05 * torch.randn_like(t) if n != "temperature" else t
                       for n, t in origin.items()}]
    first, second = _tempered_state(1, 0.2), _tempered_state(2, 5.0)

    def first_target(model, targets):
        return transfer(model, spec, source, targets, mlp.train,
                        TransferOptions(steps=3, batch_size=128, device="cpu")).targets[0]

    alone = first_target(_Tempered(), [first])
    # Neither the working model's own buffers nor another target's may leak into a gradient.
    for other in (first_target(_Tempered(9.0), [first]), first_target(_Tempered(), [first, second])):
        assert without_timings(other.steps) == without_timings(alone.steps)
        assert all(torch.equal(other.last[n], alone.last[n]) for n in alone.last)
    assert alone.last["temperature"] == 0.2


# -- determinism, progress, cancel, errors ---------------------------------------------

def test_seeded_runs_are_bit_identical(cnn):
    first, second = run(cnn, "fgmt", steps=3), run(cnn, "fgmt", steps=3)
    a, b = first.targets[0], second.targets[0]
    assert all(torch.equal(a.last[n], b.last[n]) for n in a.last)
    assert without_timings(a.steps) == without_timings(b.steps)
    other = run(cnn, "fgmt", steps=3, params={"seed": 7}).targets[0]
    assert not all(torch.equal(a.last[n], other.last[n]) for n in a.last)


def test_progress_reports_every_step_of_every_target(mlp):
    seen = []
    run(mlp, "fgmt", targets=(1, 2), steps=3, on_progress=lambda *a: seen.append(a[:3]))
    assert seen == [(s, 3, k) for s in (1, 2, 3) for k in (0, 1)]


def test_cancel_is_honoured_between_steps(mlp):
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        run(mlp, "fgmt", steps=10, should_cancel=should_cancel)
    assert len(calls) == 4


def test_non_finite_loss_is_reported(mlp):
    broken = mlp.init(1)
    broken["head.weight"][0, 0] = float("nan")
    with pytest.raises(NonFiniteLoss, match="target 0 step 0"):
        transfer(mlp.model(), mlp.spec, mlp.source, [broken], mlp.train,
                 TransferOptions(steps=2, device="cpu"))


def test_oracle_without_a_trained_state_per_target_is_refused(mlp):
    with pytest.raises(ValueError, match="trained"):
        transfer(mlp.model(), mlp.spec, mlp.source, [mlp.init(1), mlp.init(2)], mlp.train,
                 TransferOptions(steps=2, device="cpu"), method=Oracle([mlp.source[-1]]))


def test_a_multi_checkpoint_trajectory_is_walked_segment_by_segment(mlp):
    middle = {n: (a + b) / 2 + 0.01 for (n, a), b in zip(mlp.source[0].items(), mlp.source[-1].values())}
    checkpoints = [mlp.source[0], middle, mlp.source[-1]]
    target = transfer(mlp.model(), mlp.spec, checkpoints, [mlp.source[0]], mlp.train,
                      TransferOptions(steps=2, device="cpu"), method=Naive(),
                      keep_trajectory=True).targets[0]
    # Naive from the source's own init retraces the source: step j is checkpoint j.
    for step, checkpoint in enumerate(checkpoints):
        assert torch.allclose(target.trajectory[step]["head.weight"], checkpoint["head.weight"], atol=1e-6)


def test_pairs_kept_on_cpu_in_bfloat16_still_transfer(mlp):
    target = run(mlp, "fgmt", params={"pair_dtype": "bfloat16", "pair_device": "cpu"}).targets[0]
    naive = run(mlp, "naive").targets[0]
    assert target.steps[-1]["accuracy"] > naive.steps[-1]["accuracy"] + 0.2


def test_residual_networks_with_batch_norm_transfer(mlp):
    from trajx.engine.permutation.trace import derive_spec
    from trajx.engine.zoo import build_model, example_input, init_state_dict

    arch = ("resnet", {"depth": 20, "width": 0.25, "in_channels": 1, "image_size": 8})
    train_data = Dataset(mlp.train.inputs.reshape(-1, 1, 8, 8)[:256], mlp.train.targets[:256])
    spec = derive_spec(build_model(*arch), example_input(*arch))
    source = [init_state_dict(*arch, 0), init_state_dict(*arch, 2)]
    result = transfer(build_model(*arch), spec, source, [init_state_dict(*arch, 1)], train_data,
                      TransferOptions(steps=2, batch_size=64, device="cpu"))
    last = result.targets[0].last
    assert set(last) == set(source[0]) and all(torch.isfinite(t.float()).all() for t in last.values())
    assert result.timings.matching_solves == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_is_invalid_input():
    from trajx.engine.transfer.gmt import resolve_device
    from trajx.errors import InvalidInput

    with pytest.raises(InvalidInput) as info:
        resolve_device("cuda")
    assert info.value.code == "device_unavailable"


@pytest.mark.parametrize("method", ["fgmt", "gmt"])
def test_overlapping_an_ensembles_matching_with_gradients_changes_nothing(mlp, method):
    # Target k's matching runs on the matching thread beside target k+1's gradients.
    threads = []

    def solver(cost):
        threads.append(threading.current_thread().name)
        return scipy_solver(cost)

    overlapped = run(mlp, method, targets=(1, 2, 3), steps=4, solver=solver)
    assert threads and all(name.startswith("trajx-matching") for name in threads)
    serial = run(mlp, method, targets=(1, 2, 3), steps=4, solver=scipy_solver,
                 params={"overlap_matching": False})
    for a, b in zip(overlapped.targets, serial.targets, strict=True):
        assert all(torch.equal(a.permutation[g], b.permutation[g]) for g in a.permutation)
        assert all(torch.equal(a.last[n], b.last[n]) for n in a.last)
        assert without_timings(a.steps) == without_timings(b.steps)


def test_the_next_source_gradient_is_computed_while_the_last_matching_runs(mlp, monkeypatch):
    # No matching changes the source side, so step s+1's source gradient need not wait
    # for step s's matchings: it is taken before step s's last target is recorded.
    order = []
    original = transfer_module.TransferRun._source_gradient

    def source_gradient(run, bank, step):
        order.append(("source", step))
        return original(run, bank, step)

    monkeypatch.setattr(transfer_module.TransferRun, "_source_gradient", source_gradient)
    run(mlp, "fgmt", targets=(1, 2), steps=3, eval_data=None,
        on_progress=lambda step, steps, k, metrics: order.append(("recorded", step, k)))
    assert order == [("source", 1), ("recorded", 1, 0), ("source", 2), ("recorded", 1, 1),
                     ("recorded", 2, 0), ("source", 3), ("recorded", 2, 1), ("recorded", 3, 0),
                     ("recorded", 3, 1)]
