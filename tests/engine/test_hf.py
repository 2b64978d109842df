"""Hugging Face architectures (`hf`): checked configs, HF checkpoints, task losses."""

import json
import os

import pytest
import torch

from tests.engine.hf_configs import BERT_CLS, BERT_MLM, FAMILIES, GPT2, LLAMA, RESNET, VIT
from trajx.engine.batches import Batch, Dataset
from trajx.engine.losses import IGNORE
from trajx.engine.metrics import evaluate
from trajx.engine.zoo import build_model, example_input, hf, init_state_dict, parse_config, task_for
from trajx.errors import InvalidInput
from trajx.io import load_checkpoint, load_data, save_tensors, validate_data

EXPECTED_CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "bert-mlm": "BertForMaskedLM",
                    "bert-cls": "BertForSequenceClassification", "vit": "ViTForImageClassification",
                    "resnet": "ResNetForImageClassification"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_builds_offline_and_runs_its_example(family):
    config = FAMILIES[family]
    model = build_model("hf", config)
    assert type(model).__name__ == EXPECTED_CLASSES[family]
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    task = task_for("hf", config)
    logits = task.outputs(model.eval(), Batch(example_input("hf", config), None))
    if config["task"] in ("causal-lm", "masked-lm"):
        assert logits.shape == (2, 8, config["vocab_size"])
    else:
        assert logits.shape == (2, config["num_labels"])


def test_causal_lm_is_built_without_a_cache_and_llama_keeps_its_kv_heads():
    model = build_model("hf", LLAMA)
    assert model.config.use_cache is False
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (16, 32)  # 2 kv heads of 8


def test_seeded_init_is_reproducible_and_names_are_hugging_faces():
    a, b = init_state_dict("hf", GPT2, seed=3), init_state_dict("hf", GPT2, seed=3)
    assert "transformer.h.0.attn.c_attn.weight" in a and "lm_head.weight" in a
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["transformer.wte.weight"], init_state_dict("hf", GPT2, 4)["transformer.wte.weight"])


@pytest.mark.parametrize(("change", "field"), [
    ({"model_type": "not-a-model"}, "arch.config.model_type"),
    ({"model_type": "vit"}, "arch.config.model_type"),  # no causal LM of that type
    ({"n_embd": "wide"}, "arch.config.n_embd"),
    ({"colour": 3}, "arch.config.colour"),
    ({"auto_map": {"AutoModelForCausalLM": "evil.Model"}}, "arch.config.auto_map"),
    ({"vocab_size": 2**40}, "arch.config.vocab_size"),
    ({"n_layer": 100_000}, "arch.config.n_layer"),
    ({"layer_norm_epsilon": float("nan")}, "arch.config.layer_norm_epsilon"),
    ({"n_embd": 30}, "arch.config"),  # 4 heads do not divide 30: transformers refuses to build
])
def test_a_bad_config_is_refused_before_building_naming_the_field(change, field):
    with pytest.raises(InvalidInput) as caught:
        parse_config("hf", {**GPT2, **change})
    assert caught.value.code == "invalid_config"
    assert caught.value.details["field"] == field


def test_task_is_required_and_checked():
    for config, message in (({k: v for k, v in GPT2.items() if k != "task"}, "Field required"),
                            ({**GPT2, "task": "translation"}, "Input should be")):
        with pytest.raises(InvalidInput) as caught:
            parse_config("hf", config)
        assert caught.value.details["errors"][0]["field"] == "arch.config.task"
        assert message in caught.value.details["errors"][0]["message"]


def test_parameter_count_is_capped_before_anything_is_allocated(monkeypatch):
    monkeypatch.setattr(hf, "MAX_PARAMETERS", 10_000)
    with pytest.raises(InvalidInput) as caught:
        parse_config("hf", {**GPT2, "vocab_size": 47})  # a new config: not a cached answer
    assert caught.value.code == "invalid_config"
    assert "parameters; at most 10,000" in caught.value.message


def test_config_json_written_by_save_pretrained_is_a_valid_config(tmp_path):
    model = build_model("hf", LLAMA)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    rebuilt = build_model("hf", {**saved, "task": "causal-lm"})
    assert {n: t.shape for n, t in rebuilt.state_dict().items()} == \
        {n: t.shape for n, t in model.state_dict().items()}


@pytest.mark.parametrize("layout", ["file", "folder", "sharded-index", "sharded-folder"])
def test_save_pretrained_checkpoints_load_as_they_are(tmp_path, layout):
    trained = build_model("hf", GPT2)
    shard = {"max_shard_size": "20KB"} if layout.startswith("sharded") else {}
    trained.save_pretrained(tmp_path, **shard)
    path = {"file": tmp_path / "model.safetensors", "folder": tmp_path,
            "sharded-index": tmp_path / "model.safetensors.index.json",
            "sharded-folder": tmp_path}[layout]
    if layout.startswith("sharded"):
        assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    fresh = build_model("hf", GPT2)
    fresh.load_state_dict(load_checkpoint(path, fresh.state_dict(), "source[0]"))
    for name, tensor in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    assert fresh.lm_head.weight.data_ptr() == fresh.transformer.wte.weight.data_ptr()  # still tied


def test_a_shard_outside_the_index_folder_is_refused(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"transformer.wte.weight": "../elsewhere.safetensors"}}))
    with pytest.raises(InvalidInput) as caught:
        load_checkpoint(tmp_path, build_model("hf", GPT2).state_dict(), "source[0]")
    assert caught.value.code == "invalid_checkpoint_index"


def _tokens(config, n=4, length=8, seed=0):
    return torch.randint(0, config["vocab_size"], (n, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_next_token_loss_is_hugging_faces_causal_lm_loss():
    model = build_model("hf", GPT2).eval()
    ids = _tokens(GPT2)
    labels = ids.clone()
    labels[:, :3] = IGNORE  # a prompt that is not scored
    task = task_for("hf", GPT2)
    ours = task.loss(task.outputs(model, Batch(ids, labels)), labels)
    assert torch.allclose(ours, model(ids, labels=labels).loss)
    score = task.score(task.outputs(model, Batch(ids, labels)), labels)
    assert score.units == 4 * 5  # labels 3..7 are counted, predicted from positions 2..6
    assert abs(score.loss_sum / score.units - float(ours)) < 1e-5


@torch.no_grad()
def test_masked_token_loss_is_hugging_faces_masked_lm_loss():
    model = build_model("hf", BERT_MLM).eval()
    ids = _tokens(BERT_MLM)
    labels = torch.full_like(ids, IGNORE)
    labels[:, 2] = ids[:, 2]
    task = task_for("hf", BERT_MLM)
    assert torch.allclose(task.loss(task.outputs(model, Batch(ids, labels)), labels),
                          model(ids, labels=labels).loss)


def test_attention_mask_from_the_data_reaches_the_model(tmp_path):
    model = build_model("hf", GPT2).eval()
    ids = _tokens(GPT2)
    mask = torch.ones_like(ids)
    mask[:, :2] = 0  # left padding
    save_tensors(tmp_path / "d.safetensors", {"inputs": ids, "targets": ids.clone(), "attention_mask": mask})
    data = load_data(tmp_path / "d.safetensors", "train_data")
    task = task_for("hf", GPT2)
    masked = evaluate(model, data, 4, "cpu", task)
    plain = evaluate(model, Dataset(ids, ids), 4, "cpu", task)
    assert masked["loss"] != pytest.approx(plain["loss"])
    with torch.no_grad():
        expected = model(ids, attention_mask=mask, labels=ids).loss
    assert masked["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert 0.0 <= masked["accuracy"] <= 1.0


@pytest.mark.parametrize(("data", "code", "tensor"), [
    (Dataset(torch.randint(0, 48, (4, 8)), torch.randint(0, 48, (4,))), "data_mismatch", "targets"),
    (Dataset(torch.randn(4, 8), torch.randint(0, 48, (4, 8))), "data_mismatch", "inputs"),
    (Dataset(torch.randint(0, 48, (4, 8)), torch.randint(48, 60, (4, 8))), "target_out_of_range", "targets"),
    (Dataset(torch.randint(0, 48, (4, 8)), torch.full((4, 8), IGNORE)), "data_mismatch", "targets"),
])
def test_token_data_that_does_not_fit_the_task_is_refused(data, code, tensor):
    model = build_model("hf", GPT2)
    with pytest.raises(InvalidInput) as caught:
        validate_data(data, model, "train_data", (8,), task_for("hf", GPT2))
    assert (caught.value.code, caught.value.details["tensor"]) == (code, tensor)


@pytest.mark.parametrize("config", [BERT_CLS, VIT, RESNET], ids=["bert-cls", "vit", "resnet"])
def test_classifiers_take_class_ids_and_report_accuracy(config):
    model = build_model("hf", config)
    inputs = example_input("hf", config, batch=6)
    data = Dataset(inputs, torch.randint(0, config["num_labels"], (6,)))
    task = task_for("hf", config)
    validate_data(data, model, "eval_data", inputs.shape[1:], task)
    metrics = evaluate(model, data, 4, "cpu", task)
    assert set(metrics) == {"loss", "accuracy"}
    with pytest.raises(InvalidInput) as caught:
        validate_data(Dataset(inputs, torch.full((6,), config["num_labels"])), model, "eval_data",
                      inputs.shape[1:], task)
    assert caught.value.code == "target_out_of_range"


def test_a_small_vocabulary_config_builds_without_transformers_warnings():
    """GPT-2's default special token ids (50256) lie outside a small vocabulary: unset, not warned about."""
    import logging

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        model = build_model("hf", {"task": "causal-lm", "model_type": "gpt2", "n_embd": 16, "n_layer": 1,
                                   "n_head": 2, "vocab_size": 40, "n_positions": 16})
    finally:
        logger.removeHandler(handler)
    assert messages == []
    assert model.config.bos_token_id is None and model.config.eos_token_id is None
