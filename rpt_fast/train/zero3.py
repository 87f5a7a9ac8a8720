"""ZeRO-3 bookkeeping for the fused prompt encoder.

``FusedResidualMLP.forward`` hands its children's weights (``down``, ``up``, ``norm``) to one
fused op instead of calling those children, so DeepSpeed's per-module hooks never gather them.
Inside ``engine.forward`` DeepSpeed notices such accesses on its own; anywhere else (the
``generate`` of evaluation) they would arrive partitioned and empty. Registering them as
external parameters of the fused module, DeepSpeed's documented API for this, makes every
call gather them.
"""

from __future__ import annotations

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
