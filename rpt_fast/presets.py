"""Architecture presets of T5 (v1.1 / LM-adapted sizes) for random-weight memory and speed work,
plus the tiny byte-level model the demo and the tests train. Values are ``T5Config`` kwargs.

A preset's weights are a function of the seed alone (:func:`init_preset_weights`): ``rpt-train
--model t5-tiny --seed 42`` trains on the very backbone that ``build_backbone("t5-tiny", 42)``
returns, so its exported prompt or PEFT adapter can be reloaded and scored anywhere."""

from __future__ import annotations

import contextlib

_V1_1 = {
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "d_kv": 64,
}

T5_PRESETS: dict[str, dict] = {
    # Byte-level (ByT5 tokenizer, 384 ids): trains in about a minute on 2 CPU cores. No dropout:
    # prompt-only training of a random frozen backbone stalls under dropout 0.1.
    "t5-tiny": {
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
    },
    "t5-small": {**_V1_1, "d_model": 512, "d_ff": 1024, "num_heads": 6, "num_layers": 8},
    "t5-base": {**_V1_1, "d_model": 768, "d_ff": 2048, "num_heads": 12, "num_layers": 12},
    "t5-large": {**_V1_1, "d_model": 1024, "d_ff": 2816, "num_heads": 16, "num_layers": 24},
    "t5-xl": {**_V1_1, "d_model": 2048, "d_ff": 5120, "num_heads": 32, "num_layers": 24},
    "t5-xxl": {**_V1_1, "d_model": 4096, "d_ff": 10240, "num_heads": 64, "num_layers": 24},
}

# Every preset uses the T5 special ids (pad 0, eos 1) and starts decoding from pad.
_SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}


def t5_config(name: str, **overrides):
    """A ``transformers.T5Config`` for preset ``name`` (see ``T5_PRESETS``)."""
    from transformers import T5Config

    if name not in T5_PRESETS:
        raise ValueError(f"model preset: expected one of {tuple(T5_PRESETS)}, got {name!r}")
    return T5Config(**{**T5_PRESETS[name], **_SPECIAL, **overrides})


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
                    std = _t5_init_std(name, shape, model.config)
                    if std is None:
                        values = torch.ones(shape)
                    else:
                        values = torch.empty(shape).normal_(0.0, std, generator=generator)
                    param.data.copy_(values.view_as(param.data))


def build_backbone(name: str, seed: int = 42, **overrides):
    """Preset ``name`` as a ``T5ForConditionalGeneration`` with the weights ``rpt-train --model
    NAME --seed SEED`` trains on (42 is rpt-train's default seed), in eval mode.
    ``overrides`` are ``T5Config`` kwargs (e.g. ``dropout_rate``)."""
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration(t5_config(name, **overrides))
    init_preset_weights(model, seed)
    return model.eval()
