"""Hugging Face families end to end through the local runner: save_pretrained checkpoints
(the trained one sharded) in, spec derived from the export, FGMT run, HF-named results out."""

import json
import shutil

import pytest
import torch

from tests.engine.hf_configs import FAMILIES, LLAMA
from trajx.engine.losses import IGNORE
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.zoo import build_model, checkpoint_names, example_input, init_state_dict
from trajx.executors.registry import RunContext
from trajx.executors.transfer import run_transfer
from trajx.io import load_tensors, save_tensors
from trajx.job_spec import parse_job_spec


def _data(config: dict, n: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if config["task"] == "image-classification":
        return {"inputs": example_input("hf", config, batch=n, generator=generator),
                "targets": torch.randint(0, config["num_labels"], (n,), generator=generator)}
    ids = torch.randint(0, config["vocab_size"], (n, 8), generator=generator)
    if config["task"] == "causal-lm":
        return {"inputs": ids, "targets": ids.clone(), "attention_mask": torch.ones_like(ids)}
    if config["task"] == "masked-lm":
        labels = torch.full_like(ids, IGNORE)
        labels[:, 3] = ids[:, 3]
        return {"inputs": ids, "targets": labels}
    return {"inputs": ids, "targets": torch.randint(0, config["num_labels"], (n,), generator=generator)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fgmt_runs_on_each_family_from_save_pretrained_checkpoints(family, tmp_path):
    config = FAMILIES[family]
    model = build_model("hf", config)
    model.load_state_dict(init_state_dict("hf", config, seed=0))
    model.save_pretrained(tmp_path / "theta0")
    with torch.no_grad():  # a stand-in for training: the runner only needs two checkpoints
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "thetaT", max_shard_size="20KB")
    assert (tmp_path / "thetaT" / "model.safetensors.index.json").exists()
    save_tensors(tmp_path / "train.safetensors", _data(config, 16, 0))
    save_tensors(tmp_path / "eval.safetensors", _data(config, 8, 1))
    spec = parse_job_spec({
        "arch": {"name": "hf", "config": config},
        "source": [str(tmp_path / "theta0"), str(tmp_path / "thetaT" / "model.safetensors.index.json")],
        "targets": [{"seed": 1}],
        "train_data": str(tmp_path / "train.safetensors"),
        "eval_data": str(tmp_path / "eval.safetensors"),
        "params": {"steps": 2, "batch_size": 8, "device": "cpu"},
    })
    (tmp_path / "out").mkdir()
    summary = run_transfer(spec, lambda ref: tmp_path / ref, tmp_path / "out", RunContext()).summary
    target = summary["targets"][0]
    assert 0.0 <= target["last_accuracy"] <= 1.0 and target["last_loss"] > 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["permutation_spec"]  # groups were found: FGMT did not fall back to Naive
    # The result is a Hugging Face checkpoint: from_pretrained loads it next to its config.
    result = tmp_path / "out" / "target-0"
    shutil.copy(tmp_path / "theta0" / "config.json", result / "config.json")
    (result / "last.safetensors").rename(result / "model.safetensors")
    last = load_tensors(result / "model.safetensors", "last")
    reloaded = type(model).from_pretrained(result, local_files_only=True)
    saved_as = checkpoint_names("hf", reloaded)
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, last[saved_as[name]]), name


def test_llama_spec_moves_key_value_heads_with_their_query_heads():
    model = build_model("hf", LLAMA)
    spec = derive_spec(model, example_input("hf", LLAMA))
    groups = spec.param_groups
    q = groups["model.layers.0.self_attn.q_proj.weight"][0]
    k = groups["model.layers.0.self_attn.k_proj.weight"][0]
    assert q is not None and k is not None
    assert groups["model.layers.0.mlp.up_proj.weight"][0] is not None  # the MLP's hidden units move
