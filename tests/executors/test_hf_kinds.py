"""Every job kind reads a Hugging Face causal LM the same way: `save_pretrained` folders in
(checkpoint names mapped onto the module), next-token data checked with the model's own
task, results written back under the names `save_pretrained` uses."""

import pytest
import torch
from safetensors import safe_open

from tests.engine.hf_configs import GPT2
from trajx.engine.zoo import build_model, init_state_dict
from trajx.executors import RunContext, executor_for
from trajx.io import load_tensors, save_tensors
from trajx.job_spec import parse_job_spec

ARCH = {"name": "hf", "config": GPT2}


def _tokens(n: int, seed: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, GPT2["vocab_size"], (n, 8), generator=torch.Generator().manual_seed(seed))
    return {"inputs": ids, "targets": ids.clone()}  # next-token targets: [N, L], not one class per row


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-kinds")
    model = build_model("hf", GPT2)
    model.load_state_dict(init_state_dict("hf", GPT2, seed=0))
    model.save_pretrained(root / "theta0")
    torch.manual_seed(0)
    with torch.no_grad():  # a stand-in for training: two distinct checkpoints of one run
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(root / "thetaT")
    model.load_state_dict(init_state_dict("hf", GPT2, seed=1))
    model.save_pretrained(root / "other")
    save_tensors(root / "train.safetensors", _tokens(16, 0))
    save_tensors(root / "eval.safetensors", _tokens(8, 1))
    return root


def _run(files, tmp_path, document: dict):
    spec = parse_job_spec({"arch": ARCH, "train_data": "train.safetensors", "eval_data": "eval.safetensors",
                           **document})
    out = tmp_path / "out"
    out.mkdir()
    manifest = executor_for(spec.kind)(spec, lambda ref: files / ref, out, RunContext())
    return out, manifest


def _saved_names(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as file:
        return set(file.keys())


def _model_names(path) -> set[str]:
    """A result's tensor names, less those tied to another (save_pretrained leaves them out)."""
    return set(load_tensors(path, "result")) - {"lm_head.weight"}


def test_transfer_reads_and_writes_checkpoint_names(files, tmp_path):
    out, manifest = _run(files, tmp_path, {"kind": "transfer", "method": "naive", "source": ["theta0", "thetaT"],
                                           "targets": [{"checkpoint": "other"}],
                                           "params": {"steps": 2, "batch_size": 8, "device": "cpu"}})
    assert _model_names(out / "target-0" / "last.safetensors") == _saved_names(files / "theta0")
    # Naive from `other`'s init moves it by the source's displacement: θ₂ᵀ = θ₂⁰ + (θ₁ᵀ − θ₁⁰).
    last = load_tensors(out / "target-0" / "last.safetensors", "last")
    name = "transformer.h.0.mlp.c_fc.weight"
    start, end, other = (load_tensors(files / f / "model.safetensors", f)[name] for f in ("theta0", "thetaT", "other"))
    assert torch.allclose(last[name], other + end - start, atol=1e-5)
    assert manifest.summary["targets"][0]["last_accuracy"] is not None  # next-token accuracy on eval data


def test_average_reads_and_writes_checkpoint_names(files, tmp_path):
    out, manifest = _run(files, tmp_path, {"kind": "average", "checkpoints": ["theta0", "thetaT"],
                                           "method": {"name": "uniform", "last": 2},
                                           "params": {"batch_size": 8, "bn_batches": 1, "device": "cpu"}})
    averaged = load_tensors(out / "averaged.safetensors", "averaged")
    assert _model_names(out / "averaged.safetensors") == _saved_names(files / "theta0")
    name = "transformer.h.1.attn.c_attn.weight"
    start, end = (load_tensors(files / f / "model.safetensors", f)[name] for f in ("theta0", "thetaT"))
    assert torch.allclose(averaged[name], (start + end) / 2, atol=1e-6)
    assert manifest.summary["best_accuracy"] is not None


def test_align_reads_and_writes_checkpoint_names(files, tmp_path):
    out, manifest = _run(files, tmp_path, {"kind": "align", "model_a": "theta0", "model_b": "other",
                                           "outputs": {"merged": True},
                                           "params": {"batch_size": 8, "bn_batches": 1, "device": "cpu"}})
    for role in ("aligned_b", "merged"):
        assert _model_names(out / f"{role}.safetensors") == _saved_names(files / "theta0"), role
    # Matching ran on the mapped names: its objective was recorded (a tiny random model's
    # barrier need not fall, so that is not asserted here).
    assert manifest.summary["matching_sweeps"] >= 1
    assert manifest.summary["matching_objective"] is not None
