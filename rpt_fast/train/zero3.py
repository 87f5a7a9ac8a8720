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

    config = copy.deepcopy(ds_config)
    config["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": bool(offload.get("pin_memory"))}
    deepspeed.zero.Init(module=module, config_dict_or_path=config, dtype=torch.float32)
    return True
