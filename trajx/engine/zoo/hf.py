"""`hf`: a Hugging Face architecture built from its config, with no code and no download.

    {"name": "hf", "config": {"task": "causal-lm", "model_type": "gpt2", "n_embd": 64, ...}}

`config` holds `config.json` fields plus `task`, one of TASKS; the model is
`AutoModelFor<Task>.from_config` with random weights. Nothing is ever downloaded
(HF_HUB_OFFLINE=1 on this path) and remote code is never run (`auto_map` is refused,
`trust_remote_code=False`). Parameter names are Hugging Face's, so what `save_pretrained`
writes loads as is (tied weights such as `lm_head.weight` may be absent), and results are
written under those names: for models transformers 5 saves under their older names (ViT's
`encoder.layer.0.attention.attention.key` for the module's `layers.0.attention.k_proj`),
`checkpoint_names` maps one to the other with transformers' own conversion table.

The config is checked before anything is built: `model_type` must have a model for the
task, every key must be a field of its config class, numbers are bounded, the layer count
is capped and the parameter count, measured on a model built on the meta device (no
memory), must stay under MAX_PARAMETERS. Any problem is `invalid_config` naming the field.

The engine's rule that both sides of a gradient pair see the same function holds only
without dropout, and Hugging Face models also drop out inside attention functions: every
dropout probability of the config is set to 0. Models get `use_cache=False` (a key/value
cache is no use for training and cannot be exported), and special token ids left at
defaults outside a smaller vocabulary are unset (transformers would warn on every build).
"""

import copy
import json
import math
import os
import re
from dataclasses import fields
from functools import lru_cache
from typing import Any

import torch
from pydantic import model_validator
from torch import nn

from trajx.arch_configs import HFArchConfig
from trajx.engine.losses import CLASSES_OR_VALUES, MaskedTokens, NextToken, Task
from trajx.engine.zoo.registry import ArchitectureEntry
from trajx.errors import InvalidInput, UnsupportedModel

# task -> (Auto class, its model_type -> class-name mapping in transformers.models.auto.modeling_auto)
TASKS: dict[str, tuple[str, str]] = {
    "causal-lm": ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    "masked-lm": ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    "sequence-classification": ("AutoModelForSequenceClassification",
                                "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    "image-classification": ("AutoModelForImageClassification",
                             "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    "audio-classification": ("AutoModelForAudioClassification",
                             "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
}
_TASK_OBJECTS: dict[str, Task] = {"causal-lm": NextToken(), "masked-lm": MaskedTokens(),
                                  "sequence-classification": CLASSES_OR_VALUES,
                                  "image-classification": CLASSES_OR_VALUES,
                                  "audio-classification": CLASSES_OR_VALUES}

MAX_PARAMETERS = 1_500_000_000  # a 1.3B model still fits a worker's memory with its pairs
MAX_LAYERS = 256
MAX_INTEGER = 2**20  # vocabularies of 256k and hidden sizes of 64k pass
# Keys every config takes besides its class's fields.
_COMMON_KEYS = {"model_type", "num_labels"}
_REFUSED_KEYS = {"auto_map": "remote code is never run", "quantization_config": "quantized models are not supported"}
_DROPOUT = re.compile(r"dropout|pdrop")
EXAMPLE_SEQ_LEN = 8
EXAMPLE_IMAGE_SIZE = 32
EXAMPLE_AUDIO_SAMPLES = 1600  # 0.1 s at 16 kHz


class HFConfig(HFArchConfig):
    """`task`, `model_type` (checked without torch, by the API too) and the other
    `config.json` fields (checked by `hf_config`)."""

    @model_validator(mode="after")
    def _buildable(self) -> "HFConfig":
        hf_config(self)  # raises InvalidInput (not a ValueError): it reaches the caller as is
        return self

    def fields_json(self) -> str:
        """The config.json fields (task left out), canonical: the cache key of `hf_config`."""
        return json.dumps({"model_type": self.model_type, **(self.model_extra or {})}, sort_keys=True)


def _transformers():
    os.environ["HF_HUB_OFFLINE"] = "1"  # before the first import: huggingface_hub reads it once
    import transformers
    from transformers.models.auto import modeling_auto

    return transformers, modeling_auto


def _invalid(message: str, key: str | None = None) -> InvalidInput:
    field = "arch.config" + (f".{key}" if key else "")
    return InvalidInput(f"invalid config for architecture 'hf': {field}: {message}", code="invalid_config",
                        field=field, errors=[{"field": field, "message": message}])


def hf_config(config: HFConfig) -> Any:
    """The transformers config of `config`, checked (see module docstring); a private copy."""
    return copy.deepcopy(_checked(config.task, config.fields_json()))


@lru_cache(maxsize=32)
def _checked(task: str, fields_json: str) -> Any:
    transformers, modeling_auto = _transformers()
    values = json.loads(fields_json)
    model_type = values["model_type"]
    supported = getattr(modeling_auto, TASKS[task][1])
    if model_type not in supported:
        raise _invalid(f"model_type {model_type!r} has no {task} model in transformers "
                       f"{transformers.__version__}", "model_type")
    config_class = transformers.CONFIG_MAPPING[model_type]
    allowed = {f.name for f in fields(config_class)} | set(config_class.attribute_map) | _COMMON_KEYS
    for key, value in values.items():
        if key in _REFUSED_KEYS:
            raise _invalid(_REFUSED_KEYS[key], key)
        if key not in allowed:
            raise _invalid(f"not a field of {config_class.__name__}", key)
        _check_numbers(value, key)
    if "use_cache" in allowed:  # encoder-decoders return their cache from any task
        values["use_cache"] = False
    values.update(_token_ids_outside(config_class, values))
    values.pop("model_type")
    try:
        hf = config_class(**values)
    except Exception as exc:  # noqa: BLE001  (transformers validates with its own error types)
        named = re.search(r"field '(\w+)'", str(exc))
        raise _invalid(str(exc).strip().splitlines()[-1].strip(), named.group(1) if named else None) from None
    for field in fields(config_class):  # the defaults too: BERT's are 0.1
        if _DROPOUT.search(field.name) and isinstance(getattr(hf, field.name), float):
            setattr(hf, field.name, 0.0)
    _check_size(hf, task, config_class.attribute_map.get("num_hidden_layers", "num_hidden_layers"))
    return hf


_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "sep_token_id")


def _token_ids_outside(config_class: Any, values: dict[str, Any]) -> dict[str, None]:
    """Special token ids the config left at defaults that a smaller vocabulary does not hold
    (GPT-2's 50256 with vocab_size 64): unset, as transformers would otherwise warn that
    they must be None or within the vocabulary."""
    vocab = values.get("vocab_size")
    if not isinstance(vocab, int):
        return {}
    defaults = {f.name: f.default for f in fields(config_class)}
    return {key: None for key in _TOKEN_IDS
            if key not in values and isinstance(defaults.get(key), int) and defaults[key] >= vocab}


def _check_numbers(value: Any, key: str) -> None:
    for leaf in _leaves(value):
        if isinstance(leaf, bool):
            continue
        if isinstance(leaf, int) and abs(leaf) > MAX_INTEGER:
            raise _invalid(f"{leaf} is larger than {MAX_INTEGER}", key)
        if isinstance(leaf, float) and not math.isfinite(leaf):
            raise _invalid(f"{leaf} is not a finite number", key)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _check_size(hf: Any, task: str, layers_key: str) -> None:
    layers = getattr(hf, "num_hidden_layers", 0) or 0
    layers += sum(getattr(hf, "depths", None) or [])
    if layers > MAX_LAYERS:
        raise _invalid(f"{layers} layers; at most {MAX_LAYERS}", layers_key)
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            model = _auto_build(hf, task)
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001  (an inconsistent config: heads not dividing the width, ...)
        raise _invalid(f"transformers cannot build it: {type(exc).__name__}: {exc}") from None
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise _invalid(f"the model would have {count:,} parameters; at most {MAX_PARAMETERS:,}")


def _auto_build(hf: Any, task: str) -> nn.Module:
    transformers, _ = _transformers()
    auto = getattr(transformers, TASKS[task][0])
    return auto.from_config(hf, trust_remote_code=False)


def build(config: HFConfig) -> nn.Module:
    """The Hugging Face model of `config`, randomly initialized from the global RNG."""
    return _auto_build(hf_config(config), config.task)


def example(config: HFConfig, batch: int) -> torch.Tensor:
    """Token ids [batch, 8] (fewer if the model has fewer positions), images
    [batch, C, S, S] (S = the config's image_size, else 32), or audio: log-mel features
    [batch, mels, 2 * positions] for a model that reads them (Whisper), else a waveform
    [batch, 1600]."""
    hf = hf_config(config)
    if config.task == "image-classification":
        size = getattr(hf, "image_size", EXAMPLE_IMAGE_SIZE)
        return torch.randn(batch, getattr(hf, "num_channels", 3), size, size)
    if config.task == "audio-classification":
        if getattr(hf, "num_mel_bins", None) and getattr(hf, "max_source_positions", None):
            return torch.randn(batch, hf.num_mel_bins, 2 * hf.max_source_positions)
        return torch.randn(batch, EXAMPLE_AUDIO_SAMPLES)
    length = min(EXAMPLE_SEQ_LEN, getattr(hf, "max_position_embeddings", None) or EXAMPLE_SEQ_LEN)
    return torch.randint(0, hf.vocab_size, (batch, length))


def checkpoint_names(model: nn.Module) -> dict[str, str]:
    """State-dict name -> the name `save_pretrained` writes it under.

    Raises UnsupportedModel("checkpoint_conversion") for a model whose saved tensors are
    not its own renamed (transformers fuses or splits some, e.g. mixture-of-experts weights).
    """
    from transformers.core_model_loading import revert_weight_conversion

    state = model.state_dict()
    saved = revert_weight_conversion(model, dict(state))
    own = {id(tensor): name for name, tensor in state.items()}  # a rename keeps the tensor object
    names = {own.get(id(tensor)): name for name, tensor in saved.items()}
    if None in names or len(names) != len(state):
        raise UnsupportedModel(
            f"{type(model).__name__}: transformers saves this model's tensors converted (fused or "
            "split), not renamed; its checkpoints cannot be matched tensor by tensor",
            code="checkpoint_conversion")
    return names


ENTRY = ArchitectureEntry(build, HFConfig, example, "Hugging Face model from a config (AutoModelFor<task>)",
                          task=lambda config: _TASK_OBJECTS[config.task], checkpoint_names=checkpoint_names)
