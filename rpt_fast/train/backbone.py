"""Builds the frozen backbone and its tokenizer: a local Hugging Face checkpoint directory, or a
architecture preset (rpt_fast.presets: T5 or decoder-only) with random weights drawn from ``--seed``.

Under ZeRO-3 the backbone is built partitioned (``deepspeed.zero.Init``, or transformers' own
ZeRO-3 loading path for checkpoints), so no rank ever holds it whole. Preset weights are drawn
one parameter at a time on rank 0 from a seeded generator and scattered
(:func:`rpt_fast.presets.init_preset_weights`), so every mode and world size gets the very
same numbers, and :func:`rpt_fast.presets.build_backbone` rebuilds them outside a run.
"""

from __future__ import annotations

import os

import torch

from ..presets import PRESETS, init_preset_weights, preset_config
from .config import TrainConfig
from .data import encode_examples

_DROPOUT_ATTRS = (
    "dropout_rate", "dropout", "attention_dropout", "hidden_dropout", "resid_pdrop",
    "embd_pdrop", "attn_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob",
)


def load_tokenizer(cfg: TrainConfig):
    """``--tokenizer``, else the model directory's own tokenizer, else the byte-level ByT5 one
    (needs no files: 256 bytes + 3 specials, pad 0, eos 1)."""
    from transformers import AutoTokenizer, ByT5Tokenizer

    path = cfg.tokenizer
    if path is None and os.path.isfile(os.path.join(cfg.model, "tokenizer_config.json")):
        path = cfg.model
    if path is None:
        return ByT5Tokenizer()
    if not os.path.isdir(path):
        raise ValueError(f"tokenizer: expected a local tokenizer directory, got {path!r}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_chat_template(cfg: TrainConfig) -> None:
    """``--chat-template`` needs a decoder-only model and a tokenizer whose template renders a
    user message, with room for an input in ``--max-input-length``: ValueError naming the
    setting otherwise (the rules of :func:`~rpt_fast.train.data.encode_examples`, checked
    before any model is built)."""
    encoder_decoder = bool(getattr(model_config(cfg), "is_encoder_decoder", False))
    encode_examples([], load_tokenizer(cfg), encoder_decoder=encoder_decoder, max_input_length=cfg.max_input_length,
                    max_target_length=cfg.max_target_length, chat_template=cfg.chat_template)


def model_config(cfg: TrainConfig):
    if cfg.model in PRESETS:
        config = preset_config(cfg.model)
    elif os.path.isdir(cfg.model):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(cfg.model)
    else:
        raise ValueError(
            f"model: expected a preset {tuple(PRESETS)} or a local Hugging Face checkpoint "
            f"directory, got {cfg.model!r}"
        )
    if cfg.backbone_dropout is not None:
        for attr in _DROPOUT_ATTRS:
            if isinstance(getattr(config, attr, None), float):
                setattr(config, attr, cfg.backbone_dropout)
    if cfg.gradient_checkpointing:
        config.use_cache = False
    return config


def _auto_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def _dtype_kwargs(dtype: torch.dtype) -> dict:
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def build_backbone(cfg: TrainConfig, ds_config: dict | None, rank: int):
    """The backbone (frozen by the caller), partitioned at construction when ``ds_config`` says
    ZeRO-3. Returns ``(model, keepalive)``; hold ``keepalive`` (transformers' ZeRO-3 switch)
    for as long as the model lives."""
    config = model_config(cfg)
    auto = _auto_class(config)
    dtype = torch.bfloat16 if cfg.bf16 and ds_config is not None else torch.float32
    zero3 = ds_config is not None and ds_config["zero_optimization"]["stage"] == 3
    keepalive = None
    if zero3:
        from transformers.integrations import HfDeepSpeedConfig

        keepalive = HfDeepSpeedConfig(ds_config)
    if cfg.model in PRESETS:
        # With the ZeRO-3 switch held, transformers builds the model under deepspeed.zero.Init.
        model = auto.from_config(config, **_dtype_kwargs(dtype))
        init_preset_weights(model, cfg.seed, rank)
    else:
        model = auto.from_pretrained(cfg.model, config=config, **_dtype_kwargs(dtype))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, keepalive
