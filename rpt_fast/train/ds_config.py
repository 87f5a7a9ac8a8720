"""Builds the DeepSpeed config dict from the run's settings, with a user JSON merged on top."""

from __future__ import annotations

import json

from ..plan_setup import NVME_BUFFER_COUNT
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
    """The DeepSpeed config of a resolved run (no "auto" left: see :mod:`autoplan`).

    ``cfg.batch_size`` is the global batch, split evenly over ranks and gradient accumulation
    steps; ``gradient_clipping`` is always set from ``max_grad_norm`` (0 = off), so DeepSpeed's
    implicit 1.0 never differs from the plain PyTorch mode.

    Precision: P and the MLP stay fp32 in every mode. ``--bf16`` under ZeRO-3 enables
    DeepSpeed's bf16 (the partitioned backbone is built bf16 by ``zero.Init``) with fp32
    gradient communication; under stages 0-2 DeepSpeed's bf16 would cast the trainable
    parameters themselves, so it stays off there and the backbone is built in bf16 instead.
    fp16 is refused: T5 overflows in fp16 and the trainable part needs no loss scaling.

    Buffers come from the model's sizes: one gradient reduce bucket for all trainable
    parameters, ZeRO-3 live/prefetch limits and NVMe swap buffers from the largest parameter.

    A user JSON (``cfg.deepspeed_config``) is merged over the generated dict, key by key.
    """
    from . import autoplan

    if cfg.zero_stage == "auto" or cfg.offload_param == "auto":
        raise ValueError("zero_stage/offload_param: resolve 'auto' first (autoplan.resolve)")
    accumulation = cfg.gradient_accumulation_steps
    if cfg.batch_size % (world_size * accumulation):
        raise ValueError(
            f"batch_size: the global batch {cfg.batch_size} must split evenly over "
            f"{world_size} ranks x {accumulation} accumulation steps; "
            f"multiples of {world_size * accumulation} do"
        )
    sizes = autoplan.model_sizes(cfg)
    bucket = autoplan.reduce_bucket_size(sizes)
    zero: dict = {"stage": cfg.zero_stage, "reduce_bucket_size": bucket, "allgather_bucket_size": bucket}
    if cfg.zero_stage == 3:
        limits = autoplan.zero3_limits(sizes, cfg)
        zero["stage3_gather_16bit_weights_on_model_save"] = False
        zero["stage3_max_live_parameters"] = limits["max_live_parameters"]
        zero["stage3_max_reuse_distance"] = limits["max_reuse_distance"]
        zero["stage3_prefetch_bucket_size"] = limits["prefetch_bucket_size"]
        # DeepSpeed's defaults, kept on measurement (benchmarks/results/cpu/compare, t5-small, one
        # CPU rank): turning its memory-efficient linear off saved 155 MiB RSS but cost 4% CPU
        # time per step, and a persistence threshold of 1e6 instead of 1e5 gained nothing.
        zero["stage3_param_persistence_threshold"] = autoplan.PERSISTENCE_THRESHOLD
        if cfg.offload_param != "none":
            offload = {"device": cfg.offload_param, "pin_memory": pin_memory}
            if cfg.offload_param == "nvme":
                offload.update(nvme_path=cfg.nvme_path, buffer_count=NVME_BUFFER_COUNT,
                               buffer_size=autoplan.nvme_buffer_size(sizes, world_size))
            zero["offload_param"] = offload
    bf16 = cfg.bf16 and cfg.zero_stage == 3
    config = {
        "train_batch_size": cfg.batch_size,
        "train_micro_batch_size_per_gpu": cfg.batch_size // (world_size * accumulation),
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": float(cfg.max_grad_norm),
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "communication_data_type": "fp32",
        # The optimizer is a torch AdamW over the trainable parameters (no C++ build needed).
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if cfg.offload_param == "nvme":
        config["aio"] = {"block_size": 1 << 20, "queue_depth": 8, "intra_op_parallelism": 1,
                         "single_submit": False, "overlap_events": True}
    if cfg.deepspeed_config is not None:
        with open(cfg.deepspeed_config, encoding="utf-8") as handle:
            try:
                user = json.load(handle)
            except json.JSONDecodeError as exc:
                raise ValueError(f"deepspeed_config: {cfg.deepspeed_config} is not valid JSON ({exc})") from exc
        if not isinstance(user, dict):
            raise ValueError(f"deepspeed_config: {cfg.deepspeed_config} must hold a JSON object")
        config = _merge(config, user)
    if (config.get("fp16") or {}).get("enabled"):
        raise ValueError(
            f"deepspeed_config: fp16 is not supported ({cfg.deepspeed_config} enables it): T5 "
            "overflows in fp16 and DeepSpeed would run it with a static loss scale; use --bf16"
        )
    return config
