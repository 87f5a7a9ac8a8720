"""ZeRO-3 bookkeeping for the prompt encoder: its fused weights, and its precision under NVMe
offload.

``FusedResidualMLP.forward`` hands its children's weights (``down``, ``up``, ``norm``) to one
fused op instead of calling those children, so DeepSpeed's per-module hooks never gather them.
Inside ``engine.forward`` DeepSpeed notices such accesses on its own; anywhere else (the
``generate`` of evaluation) they would arrive partitioned and empty. Registering them as
external parameters of the fused module, DeepSpeed's documented API for this, makes every
call gather them.

NVMe parameter offload: ``deepspeed.initialize`` partitions parameters it finds unpartitioned
(P and the MLP: the backbone was partitioned at construction) with the backbone's
``zero.Init``, which hands every partition of at least ``max(1 MiB, aio block_size)`` bytes to
its NVMe swapper, whose buffers hold the backbone's dtype: under ``--bf16`` the fp32 trainable
matrices were rounded to bf16 there before the optimizer took its fp32 copy. They are
partitioned first here, with CPU offload and no swapper, so they stay exact fp32 (ZeRO-3 keeps
the trainable partitions in host memory under any parameter offload anyway).

``zero.Init``'s ``dtype=`` argument is never used: DeepSpeed (0.19.2 to 0.19.8 at least) ignores
it wherever the accelerator reports no fp16 support (see :func:`zero_init_config`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..modules import FusedResidualMLP


def register_fused_parameters(model: nn.Module) -> int:
    """Registers the child parameters of every ``FusedResidualMLP`` in ``model`` with the fused
    module; returns how many were registered (0 when nothing is ZeRO-3 partitioned)."""
    import deepspeed

    count = 0
    for module in model.modules():
        if not isinstance(module, FusedResidualMLP):
            continue
        own = {id(p) for p in module.parameters(recurse=False)}
        for param in module.parameters():
            if id(param) not in own and hasattr(param, "ds_id"):
                deepspeed.zero.register_external_parameter(module, param)
                count += 1
    return count


def zero_init_config(ds_config: dict, dtype: torch.dtype) -> dict:
    """A copy of ``ds_config`` under which ``deepspeed.zero.Init`` (given no ``dtype=``) builds
    and partitions in ``dtype`` (fp32 or bf16), on every accelerator.

    Why not ``zero.Init(dtype=...)``: ``Init._set_dtype`` (deepspeed/runtime/zero/
    partition_parameters.py) reads ``dtype or torch.float16 if is_fp16_supported() else
    torch.bfloat16 if ...``, which by operator precedence drops the dtype passed whenever the
    accelerator lacks fp16 (DeepSpeed's CPU accelerator on CPUs without AVX512-FP16, e.g. AMD
    EPYC) and picks bf16. Given a config and no dtype, it takes bf16/fp16/fp32 from the config's
    ``bf16`` and ``fp16`` sections, set explicitly here."""
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype: expected torch.float32 or torch.bfloat16, got {dtype}")
    config = copy.deepcopy(ds_config)
    config["bf16"] = {"enabled": dtype == torch.bfloat16}  # read before the old "bfloat16" key
    config["fp16"] = {"enabled": False}
    return config


def partition_trainables_off_nvme(module: nn.Module, ds_config: dict) -> bool:
    """Under ZeRO-3 with ``offload_param`` on NVMe, partitions ``module``'s parameters (the
    prompt encoder, before ``deepspeed.initialize``) in their own dtype with CPU offload, so
    none passes through the NVMe swap buffers (see the module docstring). Returns whether it
    did; other settings leave them to ``deepspeed.initialize``, which keeps their dtype."""
    zero = ds_config.get("zero_optimization") or {}
    offload = zero.get("offload_param") or {}
    if zero.get("stage") != 3 or offload.get("device") != "nvme":
        return False
    import deepspeed

    config = zero_init_config(ds_config, torch.float32)  # not dtype=: see zero_init_config
    config["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": bool(offload.get("pin_memory"))}
    deepspeed.zero.Init(module=module, config_dict_or_path=config)
    return True
