"""The `average` and `align` spec models: what they accept and how they refuse, by field."""

import pytest
from pydantic import ValidationError

from trajx.job_spec import AlignJob, AverageJob, parse_job_spec

ARCH = {"name": "mlp", "config": {"in_features": 64, "hidden": [32], "num_classes": 10}}


def average(**overrides):
    return {"kind": "average", "arch": ARCH, "checkpoints": [f"c{i}" for i in range(10)],
            "train_data": "train", "method": {"name": "uniform", "last": 3}} | overrides


def refusal(document) -> str:
    with pytest.raises(ValidationError) as error:
        parse_job_spec(document)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.value.errors())


def test_each_method_parses_with_its_defaults():
    assert isinstance(parse_job_spec(average()), AverageJob)
    lawa = parse_job_spec(average(method={"name": "lawa", "last": 3, "every": 4}))
    assert (lawa.method.last, lawa.method.every) == (3, 4)
    ema = parse_job_spec(average(method={"name": "ema", "decay": 0.9}))
    assert ema.method.warmup is False and ema.params.device == "auto"
    uniform = parse_job_spec(average(method={"name": "uniform", "fraction": 0.25}))
    assert uniform.method.window(10) == 3  # rounded up
    assert set(parse_job_spec(average(eval_data="test")).artifact_refs()) == \
        {*(f"checkpoints[{i}]" for i in range(10)), "train_data", "eval_data"}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"method": {"name": "uniform", "last": 11}}, "method.last: a window of last=11 spans 11"),
    ({"method": {"name": "lawa", "last": 4, "every": 40}, "steps": list(range(0, 100, 10))},
     "method.last: a window of last=4 every=40 spans 120 steps but 'steps' run from 0 to 90"),
    ({"steps": [0, 1, 2]}, "steps: 3 steps for 10 checkpoints"),
    ({"steps": [0, 1, 2, 3, 4, 4, 6, 7, 8, 9]}, "steps: must increase strictly; steps[4]=4, steps[5]=4"),
    ({"select_data": "s"}, "select_data: only a sweep chooses"),
    ({"method": {"name": "ema", "decay": 1.0}}, "method.ema.decay: Input should be less than 1"),
    ({"method": {"name": "ema", "decay": 0.0}}, "method.ema.decay: Input should be greater than 0"),
    ({"method": {"name": "uniform"}}, "needs exactly one of 'last' or 'fraction'"),
    ({"method": {"name": "median"}}, "method: Input tag 'median' found"),
    ({"checkpoints": ["c0"]}, "checkpoints: List should have at least 2 items"),
    ({"checkpoints": ["c"] * 1001}, "checkpoints: List should have at most 1000 items"),
    ({"sweep": {"last": [2, 4]}}, "eval_data: a sweep chooses on held-out data"),
    ({"sweep": {"last": [2, 40]}, "eval_data": "t"}, "sweep.last: a window of last=40"),
    ({"sweep": {"decay": [0.9]}, "eval_data": "t"}, "sweep.decay: method 'uniform' sweeps 'last'"),
    ({"method": {"name": "ema", "decay": 0.9}, "sweep": {"decay": [0.5, 1.5]}, "eval_data": "t"},
     "sweep.decay.1: Input should be less than 1"),
    ({"sweep": {}, "eval_data": "t"}, "a sweep needs exactly one of 'last' or 'decay'"),
    ({"smoothing": 3}, "smoothing: Extra inputs are not permitted"),
])
def test_average_refusals_name_the_field(overrides, message):
    assert message in refusal(average(**overrides))


def test_lawa_every_is_in_steps_so_the_span_is_checked_against_steps_only_when_known():
    """Without `steps` the span depends on the files' steps: the executor checks it."""
    spaced = average(method={"name": "lawa", "last": 4, "every": 40})
    assert parse_job_spec(spaced).method.every == 40
    assert parse_job_spec(spaced | {"steps": list(range(0, 1000, 100))}).steps[-1] == 900


def test_align_parses_and_refuses_by_field():
    spec = parse_job_spec({"kind": "align", "arch": ARCH, "model_a": "a", "model_b": "b", "train_data": "d"})
    assert isinstance(spec, AlignJob) and spec.method == "weights" and spec.outputs.merged is False
    assert spec.artifact_refs() == {"model_a": "a", "model_b": "b", "train_data": "d"}
    assert "method: Input should be 'weights' or 'activations'" in refusal(
        {"kind": "align", "arch": ARCH, "model_a": "a", "model_b": "b", "train_data": "d", "method": "mean"})
    assert "model_b: Field required" in refusal({"kind": "align", "arch": ARCH, "model_a": "a", "train_data": "d"})
