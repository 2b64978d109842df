"""Checkpoints as training code writes them: nested .pt dicts, wrapper prefixes, HF shards."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from trajx.checkpoint_names import mismatch_hint
from trajx.client import InvalidLocalInput, KeyMapping, prepare_checkpoint
from trajx.client.keymap import WRAPPER_PREFIXES, plan_renames


def _state() -> dict[str, torch.Tensor]:
    return {"fc1.weight": torch.randn(4, 3), "fc1.bias": torch.randn(4),
            "fc2.weight": torch.randn(2, 4).to(torch.bfloat16)}


def _assert_same(loaded, expected):
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)


def test_training_checkpoint_with_model_key_and_ddp_prefix(tmp_path):
    state = _state()
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3,
                "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pt")

    prepared = prepare_checkpoint(tmp_path / "ckpt.pt", tmp_path / "scratch")

    _assert_same(load_file(prepared.path), state)
    assert any("under 'model'" in note for note in prepared.notes)
    assert any("'module.'" in note for note in prepared.notes)


def test_lightning_state_dict_and_compile_prefix_are_both_stripped(tmp_path):
    state = _state()
    torch.save({"state_dict": {f"model._orig_mod.{k}": v for k, v in state.items()},
                "pytorch-lightning_version": "2.4"}, tmp_path / "last.ckpt.pt")

    prepared = prepare_checkpoint(tmp_path / "last.ckpt.pt", tmp_path / "scratch")

    _assert_same(load_file(prepared.path), state)


def test_explicit_key_walks_nested_dicts_and_names_what_is_missing(tmp_path):
    state = _state()
    torch.save({"ema": {"weights": state}, "model": {"other.weight": torch.zeros(1)}}, tmp_path / "c.pt")

    prepared = prepare_checkpoint(tmp_path / "c.pt", tmp_path / "s", KeyMapping(key="ema.weights"))
    _assert_same(load_file(prepared.path), state)

    with pytest.raises(InvalidLocalInput, match=r"--key 'ema.nope': no 'nope' here \(keys: \['weights'\]\)"):
        prepare_checkpoint(tmp_path / "c.pt", tmp_path / "s2", KeyMapping(key="ema.nope"))


def test_a_dict_without_a_state_dict_asks_for_key(tmp_path):
    torch.save({"weights": {"a": torch.zeros(1)}, "epoch": 1}, tmp_path / "c.pt")
    with pytest.raises(InvalidLocalInput, match="name the state dict's key with --key"):
        prepare_checkpoint(tmp_path / "c.pt", tmp_path / "s")


def test_safetensors_with_wrapper_prefix_is_renamed_without_touching_data(tmp_path):
    state = _state()
    save_file({f"module.{k}": v for k, v in state.items()}, tmp_path / "w.safetensors",
              metadata={"format": "pt"})

    prepared = prepare_checkpoint(tmp_path / "w.safetensors", tmp_path / "s")

    assert prepared.path.name == "w.safetensors" and prepared.path != tmp_path / "w.safetensors"
    _assert_same(load_file(prepared.path), state)


def test_safetensors_keep_a_model_prefix_which_hugging_face_names_carry(tmp_path):
    own = _state()
    save_file({f"model.{k}": v for k, v in own.items()}, tmp_path / "hf.safetensors")

    prepared = prepare_checkpoint(tmp_path / "hf.safetensors", tmp_path / "s")

    assert prepared.path == tmp_path / "hf.safetensors" and prepared.notes == []
    stripped = prepare_checkpoint(tmp_path / "hf.safetensors", tmp_path / "s2",
                                  KeyMapping(strip_prefixes=("model.",)))
    _assert_same(load_file(stripped.path), own)


def test_explicit_prefix_that_nothing_has_is_reported_not_applied(tmp_path):
    save_file(_state(), tmp_path / "w.safetensors")
    prepared = prepare_checkpoint(tmp_path / "w.safetensors", tmp_path / "s", KeyMapping(strip_prefixes=("net.",)))
    assert prepared.path == tmp_path / "w.safetensors"
    assert prepared.notes == [("no tensor name starts with 'net.', nothing stripped "
                               "(names look like ['fc1.bias', 'fc1.weight', 'fc2.weight'])")]


def test_stripping_that_would_collide_is_refused():
    with pytest.raises(InvalidLocalInput, match="same name"):
        plan_renames(["a.w", "b.a.w"], KeyMapping(strip_prefixes=("b.",)), WRAPPER_PREFIXES)


def test_sharded_hugging_face_checkpoint_is_merged_into_one_file(tmp_path):
    state = _state()
    save_file({"fc1.weight": state["fc1.weight"]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"fc1.bias": state["fc1.bias"], "fc2.weight": state["fc2.weight"]},
              tmp_path / "model-00002-of-00002.safetensors")
    index = {"metadata": {"total_size": 0}, "weight_map": {
        "fc1.weight": "model-00001-of-00002.safetensors",
        "fc1.bias": "model-00002-of-00002.safetensors",
        "fc2.weight": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))

    prepared = prepare_checkpoint(tmp_path / "model.safetensors.index.json", tmp_path / "s")

    assert prepared.path.name == "model.safetensors"
    _assert_same(load_file(prepared.path), state)


def test_a_shard_that_disagrees_with_its_index_is_named(tmp_path):
    save_file({"fc1.weight": torch.zeros(2)}, tmp_path / "a.safetensors")
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"fc1.weight": "a.safetensors", "fc1.bias": "a.safetensors"}}))
    with pytest.raises(InvalidLocalInput, match=r"a.safetensors: does not match the index; missing: \['fc1.bias'\]"):
        prepare_checkpoint(tmp_path / "m.safetensors.index.json", tmp_path / "s")


def test_a_shard_outside_the_index_directory_is_refused(tmp_path):
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../x.safetensors"}}))
    with pytest.raises(InvalidLocalInput, match="not a file next to the index"):
        prepare_checkpoint(tmp_path / "m.safetensors.index.json", tmp_path / "s")


@pytest.mark.parametrize("missing, unexpected, hint", [
    (["fc.weight", "fc.bias"], ["model.fc.weight", "model.fc.bias"],
     "Every unexpected name starts with 'model.': strip it (trajx upload --strip-prefix model.)"),
    (["backbone.fc.weight"], ["fc.weight"], "replacing the prefix '' with 'backbone.'"),
    (["layers.0.weight"], ["layer.0.weight"], "Closest expected names: 'layer.0.weight' -> 'layers.0.weight'"),
    (["a"], ["zzzzzz"], ""),
])
def test_mismatch_hint(missing, unexpected, hint):
    assert hint in mismatch_hint(missing, unexpected)
    assert bool(hint) == bool(mismatch_hint(missing, unexpected))
