"""Builds the DeepSpeed config dict from the run's settings, with a user JSON merged on top."""

from __future__ import annotations

import json

from .config import TrainConfig


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_ds_config(cfg: TrainConfig, world_size: int, *, pin_memory: bool) -> dict:
    """The DeepSpeed config: ``cfg.batch_size`` is the global batch, split evenly over ranks and
    ``cfg.gradient_accumulation_steps`` micro-batches; ``gradient_clipping`` is always set from ``max_grad_norm``
    (0 = off), so DeepSpeed's implicit 1.0 never differs from the plain PyTorch mode.

    A user JSON (``cfg.deepspeed_config``) is merged over the generated dict, key by key.
    """
    gas = cfg.gradient_accumulation_steps
    if cfg.batch_size % (world_size * gas):
        raise ValueError(
            f"batch_size: the global batch {cfg.batch_size} must split evenly over "
            f"{world_size} ranks" + (f" x {gas} gradient accumulation steps" if gas > 1 else "")
        )
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False
        zero["stage3_max_live_parameters"] = cfg.max_live_parameters
        zero["stage3_max_reuse_distance"] = cfg.max_live_parameters // 2
        zero["stage3_prefetch_bucket_size"] = cfg.max_live_parameters // 2
        if cfg.offload_param != "none":
            offload = {"device": cfg.offload_param, "pin_memory": pin_memory}
            if cfg.offload_param == "nvme":
                offload["nvme_path"] = cfg.nvme_path
            zero["offload_param"] = offload
    config = {
        "train_batch_size": cfg.batch_size,
        "train_micro_batch_size_per_gpu": cfg.batch_size // (world_size * gas),
        "gradient_accumulation_steps": gas,
        "gradient_clipping": float(cfg.max_grad_norm),
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.bf16},
        "fp16": {"enabled": False},
        # The optimizer is a torch AdamW over the trainable parameters (no C++ build needed).
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if cfg.deepspeed_config is not None:
        with open(cfg.deepspeed_config, encoding="utf-8") as handle:
            try:
                user = json.load(handle)
            except json.JSONDecodeError as exc:
                raise ValueError(f"deepspeed_config: {cfg.deepspeed_config} is not valid JSON ({exc})") from exc
        if not isinstance(user, dict):
            raise ValueError(f"deepspeed_config: {cfg.deepspeed_config} must hold a JSON object")
        config = _merge(config, user)
    return config
