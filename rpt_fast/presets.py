"""Architecture presets of T5 (v1.1 / LM-adapted sizes) for random-weight memory and speed work,
plus the tiny byte-level model the demo and the tests train. Values are ``T5Config`` kwargs."""

from __future__ import annotations

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
