"""Tiny Hugging Face configs of each family the `hf` architecture is shown on."""

GPT2 = {"task": "causal-lm", "model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4,
        "vocab_size": 48, "n_positions": 32, "bos_token_id": 0, "eos_token_id": 0}
# Grouped-query attention (4 query heads share 2 key/value heads) and rotary positions.
LLAMA = {"task": "causal-lm", "model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 48, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 0}
BERT_MLM = {"task": "masked-lm", "model_type": "bert", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 48,
            "max_position_embeddings": 32}
BERT_CLS = {**BERT_MLM, "task": "sequence-classification", "num_labels": 3}
VIT = {"task": "image-classification", "model_type": "vit", "hidden_size": 32, "intermediate_size": 64,
       "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 16, "patch_size": 4,
       "num_channels": 3, "num_labels": 5}
RESNET = {"task": "image-classification", "model_type": "resnet", "embedding_size": 8,
          "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic", "num_labels": 5}

FAMILIES = {"gpt2": GPT2, "llama": LLAMA, "bert-mlm": BERT_MLM, "bert-cls": BERT_CLS,
            "vit": VIT, "resnet": RESNET}
