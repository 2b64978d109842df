"""Coverage: which Hugging Face model types trajx transfers, built from small configs on the CPU.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python bench/bench_models.py [--only gpt2,llama] [--markdown]

Every model type below is built the way a user's `hf` architecture is (`AutoModelFor<task>
.from_config`, no download, no remote code) from a small config: its family's sizes shrunk
(`SMALL`, only the keys its config class has, plus a few per-type `EXTRA` keys), its spec
derived from the `torch.export` graph and self-checked, then a 2-step FGMT transfer run from
θ⁰ (seed 0), θᵀ = θ⁰ + noise, onto a target from seed 1, on random data of the task. Per type:
parameters, permutation groups, the self-check's largest output change as a ratio to its
tolerance (and the precision the model computes in), seconds, and the refusal if any.
"""

import argparse
import time
from datetime import UTC, datetime

import torch
import transformers

from trajx.engine.batches import Dataset
from trajx.engine.losses import IGNORE
from trajx.engine.options import TransferOptions
from trajx.engine.permutation.trace import derive_spec
from trajx.engine.transfer.gmt import transfer
from trajx.engine.zoo import build_model, example_input, init_state_dict, task_for
from trajx.errors import TrajxError

SMALL = {  # every family's size keys, the ones a config class lacks are left out
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 96, "max_position_embeddings": 64, "n_embd": 32, "n_layer": 2,
    "n_head": 4, "n_positions": 64, "n_ctx": 64, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
    "d_ff": 64, "d_kv": 8, "num_layers": 2, "num_heads": 4, "num_decoder_layers": 2, "ffn_dim": 64,
    "head_dim": 8, "embedding_size": 32, "image_size": 32, "patch_size": 8, "num_channels": 3,
    "num_labels": 3, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 0,
}
CASES: dict[str, tuple[str, dict]] = {  # model type -> (task, keys beyond SMALL)
    # decoders
    "gpt2": ("causal-lm", {}), "gpt_neo": ("causal-lm", {"attention_types": [[["global", "local"], 1]],
                                                         "window_size": 16}),
    "gpt_neox": ("causal-lm", {}), "gptj": ("causal-lm", {"rotary_dim": 4}), "llama": ("causal-lm", {}),
    "mistral": ("causal-lm", {}), "qwen2": ("causal-lm", {}), "qwen3": ("causal-lm", {}),
    "phi": ("causal-lm", {}), "phi3": ("causal-lm", {}), "gemma": ("causal-lm", {}), "gemma2": ("causal-lm", {}),
    "falcon": ("causal-lm", {}), "opt": ("causal-lm", {"word_embed_proj_dim": 32}), "bloom": ("causal-lm", {}),
    "codegen": ("causal-lm", {"rotary_dim": 4}), "stablelm": ("causal-lm", {}), "olmo": ("causal-lm", {}),
    "starcoder2": ("causal-lm", {}), "biogpt": ("causal-lm", {}), "xglm": ("causal-lm", {}),
    "mixtral": ("causal-lm", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "gpt_bigcode": ("causal-lm", {}), "bart-decoder": ("causal-lm", {}),
    # encoders
    "bert": ("masked-lm", {}), "roberta": ("masked-lm", {}), "distilbert": ("masked-lm", {"dim": 32, "hidden_dim": 64,
                                                                                        "n_layers": 2, "n_heads": 4}),
    "albert": ("masked-lm", {}), "electra": ("masked-lm", {}), "deberta-v2": ("masked-lm", {}),
    "xlm-roberta": ("masked-lm", {}), "mpnet": ("masked-lm", {}), "roformer": ("masked-lm", {}),
    "megatron-bert": ("masked-lm", {}), "camembert": ("masked-lm", {}), "data2vec-text": ("masked-lm", {}),
    # encoder-decoders (their classification heads)
    "bart": ("sequence-classification", {}), "mbart": ("sequence-classification", {}),
    "t5": ("sequence-classification", {}),
    # vision
    "vit": ("image-classification", {}), "convnextv2": ("image-classification", {"hidden_sizes": [8, 16],
                                                                                 "depths": [1, 1]}),
    "beit": ("image-classification", {}), "dinov2": ("image-classification", {}),
    "convnext": ("image-classification", {"hidden_sizes": [8, 16], "depths": [1, 1]}),
    "resnet": ("image-classification", {"hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8,
                                        "layer_type": "basic"}),
    "swin": ("image-classification", {"embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2], "window_size": 2,
                                      "patch_size": 4}),
    "regnet": ("image-classification", {"hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8,
                                        "groups_width": 8}),
    "mobilenet_v2": ("image-classification", {"depth_multiplier": 0.25}),
    "efficientnet": ("image-classification", {"width_coefficient": 0.25, "depth_coefficient": 0.1,
                                              "hidden_dim": 320}),
    "poolformer": ("image-classification", {"hidden_sizes": [8, 16], "depths": [1, 1], "num_encoder_blocks": 2,
                                            "patch_sizes": [7, 3], "strides": [4, 2], "padding": [2, 1]}),
    # speech (their classification heads)
    "wav2vec2": ("audio-classification", {"conv_dim": [16, 16], "conv_stride": [5, 2], "conv_kernel": [10, 3],
                                          "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}),
    "hubert": ("audio-classification", {"conv_dim": [16, 16], "conv_stride": [5, 2], "conv_kernel": [10, 3],
                                        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}),
    "whisper": ("audio-classification", {"num_mel_bins": 16, "max_source_positions": 16,
                                         "max_target_positions": 16}),
    "data2vec-audio": ("audio-classification", {"conv_dim": [16, 16], "conv_stride": [5, 2], "conv_kernel": [10, 3],
                                                "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}),
}


def small_config(case: str) -> dict:
    task, extra = CASES[case]
    model_type = case.removesuffix("-decoder")  # bart-decoder: BART's decoder alone (BartForCausalLM)
    config_class = transformers.CONFIG_MAPPING[model_type]
    keys = set(config_class.__dataclass_fields__) | set(config_class.attribute_map)
    given = set(extra) | {config_class.attribute_map[k] for k in extra if k in config_class.attribute_map}
    sized = {k: v for k, v in SMALL.items()
             if k in keys and k not in given and config_class.attribute_map.get(k, k) not in given}
    return {"task": task, "model_type": model_type, **sized, **extra}


def _data(config: dict, n: int) -> Dataset:
    generator = torch.Generator().manual_seed(7)
    inputs = example_input("hf", config, batch=n, generator=generator)
    if config["task"] == "causal-lm":
        return Dataset(inputs, inputs.clone())
    if config["task"] == "masked-lm":
        labels = torch.full_like(inputs, IGNORE)
        labels[:, 3] = inputs[:, 3]
        return Dataset(inputs, labels)
    return Dataset(inputs, torch.randint(0, config.get("num_labels", 2), (n,), generator=generator))


MAX_PARAMETERS = 5_000_000  # a config that did not shrink is a bug of this table, not a finding


def run_case(model_type: str) -> dict:
    """Build, derive, self-check and transfer one type; the row of the table."""
    row = {"type": model_type, "task": CASES[model_type][0]}
    start = time.perf_counter()
    try:
        config = small_config(model_type)
        model = build_model("hf", config)
        row["params"] = sum(p.numel() for p in model.parameters())
        if row["params"] > MAX_PARAMETERS:
            raise ValueError(f"{row['params']:,} parameters: the small config did not apply")
        spec = derive_spec(model, example_input("hf", config))
        row["groups"] = len(spec.groups)
        check = spec.self_check
        row["check"] = f"{check.ratio:.2g} ({check.computes_in})"
        theta0 = init_state_dict("hf", config, seed=0)
        noise = torch.Generator().manual_seed(0)
        theta_t = {n: t + 0.01 * torch.randn(t.shape, generator=noise, dtype=t.dtype) if t.is_floating_point()
                   else t for n, t in theta0.items()}
        result = transfer(model, spec, [theta0, theta_t], [init_state_dict("hf", config, seed=1)],
                          _data(config, 16), TransferOptions(steps=2, batch_size=8, device="cpu"),
                          eval_data=_data(config, 8), task=task_for("hf", config))
        row["loss"] = f"{result.targets[0].steps[-1]['loss']:.3g}"
        row["outcome"] = "transfers"
    except TrajxError as exc:
        row["outcome"] = f"refused ({exc.code}): {exc.message}"
    except Exception as exc:  # noqa: BLE001  (a crash is a finding of the benchmark, reported as such)
        row["outcome"] = f"CRASH {type(exc).__name__}: {str(exc).strip()[:300]}"
    row["seconds"] = time.perf_counter() - start
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model types (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table (docs/models.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    types = [t for t in args.only.split(",") if t] or list(CASES)
    rows = []
    for model_type in types:
        row = run_case(model_type)
        rows.append(row)
        print(f"{row['type']:>14} {row['task']:>24} {row.get('params', '-'):>8} {row.get('groups', '-'):>4} "
              f"{row.get('check', '-'):>18} {row['seconds']:6.1f}s  {row['outcome'][:400]}", flush=True)
    done = sum(r["outcome"] == "transfers" for r in rows)
    print(f"\n{done}/{len(rows)} transfer ({100 * done / len(rows):.0f}%), torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {datetime.now(UTC):%Y-%m-%d}")
    if args.markdown:
        print("\n| model type | task | params | groups | self-check ratio (precision) | s | outcome |")
        print("|---|---|---:|---:|---|---:|---|")
        for r in rows:
            outcome = r["outcome"].replace("|", "\\|").replace("\n", " ")
            print(f"| {r['type']} | {r['task']} | {r.get('params', '-')} | {r.get('groups', '-')} | "
                  f"{r.get('check', '-')} | {r['seconds']:.1f} | {outcome} |")


if __name__ == "__main__":
    main()
