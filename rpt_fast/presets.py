"""Architecture presets for random-weight memory and speed work: T5 (v1.1 / LM-adapted sizes),
decoder-only LLMs with their published shapes (Llama 3.x, Qwen2.5, Mistral), and the tiny
byte-level models the demo and the tests train. Each preset is the ``config.json`` content of
its family (``model_type`` plus config kwargs), so the memory planner reads a preset exactly as
it reads a checkpoint's config.

Only what fixes the parameter shapes, the token ids and the norms' eps is reproduced: RoPE
scaling and other details that change neither memory nor the step's cost on random weights are
left at the family's defaults.

A preset's weights are a function of the seed alone (:func:`init_preset_weights`): ``rpt-train
--model t5-tiny --seed 42`` trains on the very backbone that ``build_backbone("t5-tiny", 42)``
returns, so its exported prompt or PEFT adapter can be reloaded and scored anywhere."""

from __future__ import annotations

import contextlib

_T5_V1_1 = {
    "model_type": "t5",
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "d_kv": 64,
}
# Every T5 preset uses the T5 special ids (pad 0, eos 1) and starts decoding from pad.
_T5_SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
# Llama 3.x checkpoints' ids (<|begin_of_text|>, <|end_of_text|>); they ship no pad token.
_LLAMA3 = {
    "model_type": "llama",
    "vocab_size": 128256,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
}

T5_PRESETS: dict[str, dict] = {
    # Byte-level (ByT5 tokenizer, 384 ids): trains in about a minute on 2 CPU cores. No dropout:
    # prompt-only training of a random frozen backbone stalls under dropout 0.1.
    "t5-tiny": {
        "model_type": "t5",
        "dropout_rate": 0.0,
        "vocab_size": 384,
        "d_model": 64,
        "d_ff": 128,
        "d_kv": 16,
        "num_heads": 4,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
        **_T5_SPECIAL,
    },
    "t5-small": {**_T5_V1_1, **_T5_SPECIAL, "d_model": 512, "d_ff": 1024, "num_heads": 6, "num_layers": 8},
    "t5-base": {**_T5_V1_1, **_T5_SPECIAL, "d_model": 768, "d_ff": 2048, "num_heads": 12, "num_layers": 12},
    "t5-large": {**_T5_V1_1, **_T5_SPECIAL, "d_model": 1024, "d_ff": 2816, "num_heads": 16, "num_layers": 24},
    "t5-xl": {**_T5_V1_1, **_T5_SPECIAL, "d_model": 2048, "d_ff": 5120, "num_heads": 32, "num_layers": 24},
    "t5-xxl": {**_T5_V1_1, **_T5_SPECIAL, "d_model": 4096, "d_ff": 10240, "num_heads": 64, "num_layers": 24},
}

DECODER_PRESETS: dict[str, dict] = {
    # Llama architecture (grouped-query attention, SwiGLU, untied head) at test size, with the
    # ByT5 tokenizer's ids (pad 0, eos 1; 384 ids): the decoder-only counterpart of t5-tiny.
    # Weights drawn with std 0.2, not Llama's 0.02: at width 64 a 0.02 head's logits stay
    # within about +-1, so prompt tuning cannot fit any target (synthetic task, 20 tokens, batch
    # 16, 300 steps: loss 5.64 -> 5.56 and accuracy 0 with 0.02; 4.98 -> 0.05 and 1.0 with 0.2).
    "tiny-llama": {
        "model_type": "llama",
        "vocab_size": 384,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.2,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "bos_token_id": None,
        "eos_token_id": 1,
    },
    # meta-llama/Llama-3.2-1B: tied head, head_dim 64.
    "llama-3.2-1b": {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "head_dim": 64, "tie_word_embeddings": True},
    # meta-llama/Llama-3.1-8B: 8,030,261,248 parameters.
    "llama-3.1-8b": {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "tie_word_embeddings": False},
    # meta-llama/Llama-3.1-70B: 70,553,706,496 parameters.
    "llama-3.1-70b": {**_LLAMA3, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                      "num_attention_heads": 64, "tie_word_embeddings": False},
    # Qwen/Qwen2.5-7B: q/k/v biases, 4 key-value heads, 7,615,616,512 parameters.
    "qwen2.5-7b": {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
                   "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                   "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                   "bos_token_id": 151643, "eos_token_id": 151643},
    # mistralai/Mistral-7B-v0.3: 32768-token vocabulary, 7,248,023,552 parameters.
    "mistral-7b": {"model_type": "mistral", "vocab_size": 32768, "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                   "sliding_window": None, "bos_token_id": 1, "eos_token_id": 2},
}

PRESETS: dict[str, dict] = {**T5_PRESETS, **DECODER_PRESETS}


def preset_dict(name: str) -> dict:
    """Preset ``name`` as a checkpoint's ``config.json`` content (a fresh copy)."""
    if name not in PRESETS:
        raise ValueError(f"model preset: expected one of {tuple(PRESETS)}, got {name!r}")
    return dict(PRESETS[name])


def preset_config(name: str, **overrides):
    """A ``transformers`` config (``T5Config``, ``LlamaConfig``, ...) for preset ``name``;
    ``overrides`` are that config's kwargs."""
    from transformers import AutoConfig

    raw = {**preset_dict(name), **overrides}
    return AutoConfig.for_model(raw.pop("model_type"), **raw)


def t5_config(name: str, **overrides):
    """A ``transformers.T5Config`` for T5 preset ``name`` (see ``T5_PRESETS``)."""
    if name not in T5_PRESETS:
        raise ValueError(f"model preset: expected one of {tuple(T5_PRESETS)}, got {name!r}")
    return preset_config(name, **overrides)


def _t5_init_std(name: str, shape, config) -> float | None:
    """T5's own init scheme (None: ones, for the RMS norms)."""
    if len(shape) == 1:
        return None
    owner = name.rsplit(".", 2)[-2]
    if owner in ("shared", "embed_tokens", "lm_head"):
        return 1.0
    if owner == "relative_attention_bias":
        return config.d_model ** -0.5
    if owner == "q":
        return (config.d_model * config.d_kv) ** -0.5
    return shape[1] ** -0.5  # fan-in: k, v, o, wi, wi_0, wi_1, wo


def _initial_values(name: str, shape, config, generator):
    """One parameter's initial values: T5's scheme for T5; for decoder-only models the Hugging
    Face one (normal(0, initializer_range) matrices and embeddings, zero biases, unit norms)."""
    import torch

    if config.model_type == "t5":
        std = _t5_init_std(name, shape, config)
    elif len(shape) == 1:
        return torch.zeros(shape) if name.endswith(".bias") else torch.ones(shape)
    else:
        std = config.initializer_range
    if std is None:
        return torch.ones(shape)
    return torch.empty(shape).normal_(0.0, std, generator=generator)


def init_preset_weights(model, seed: int, rank: int = 0) -> None:
    """Draws every weight from ``torch.Generator().manual_seed(seed)`` on rank 0, in parameter
    order, independent of DeepSpeed, world size and global RNG state (under ZeRO-3 each
    parameter is gathered, filled on rank 0 and scattered)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            zero3 = hasattr(param, "ds_id")
            if zero3:
                import deepspeed

                gather = deepspeed.zero.GatheredParameters([param], modifier_rank=0)
            else:
                gather = contextlib.nullcontext()
            with gather:
                if rank == 0 or not zero3:
                    shape = param.ds_shape if zero3 else param.shape
                    values = _initial_values(name, shape, model.config, generator)
                    param.data.copy_(values.view_as(param.data))


def build_backbone(name: str, seed: int = 42, **overrides):
    """Preset ``name`` with the weights ``rpt-train --model NAME --seed SEED`` trains on (42 is
    rpt-train's default seed), in eval mode: a ``T5ForConditionalGeneration`` for T5 presets,
    the family's ``...ForCausalLM`` for decoder-only ones. ``overrides`` are config kwargs
    (e.g. ``dropout_rate``)."""
    from transformers import AutoModelForCausalLM, T5ForConditionalGeneration

    config = preset_config(name, **overrides)
    if config.model_type == "t5":
        model = T5ForConditionalGeneration(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    init_preset_weights(model, seed)
    return model.eval()
