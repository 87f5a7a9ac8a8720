"""Peak bytes of ZeRO-3 gathered backbone parameters, sampled by module hooks.

Why hooks: DeepSpeed gathers and releases parameters module by module, so the peak of what is
gathered lies at a module boundary. A parameter counts once it is gathered or in flight
(``ds_status`` not NOT_AVAILABLE: its full buffer exists); persistent parameters (never
partitioned) are reported apart, as the planner (rpt_fast.memory) does.
"""

from __future__ import annotations

from torch import nn


def _nbytes(param) -> int:
    return param.ds_numel * param.element_size()


class GatheredPeak:
    """``with GatheredPeak(backbone) as g: <train steps>``; then ``g.peak_bytes``.

    Build it after ``deepspeed.initialize`` (which marks the persistent parameters). Summing
    every parameter at every hook is slow for big models: wrap an untimed step only.
    """

    def __init__(self, module: nn.Module):
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

        params = [p for p in module.parameters() if hasattr(p, "ds_id")]
        self._partitioned = [p for p in params if not p.ds_persist]
        self._absent = ZeroParamStatus.NOT_AVAILABLE
        self._module = module
        self._handles: list = []
        self.peak_bytes = 0
        self.persistent_bytes = sum(_nbytes(p) for p in params if p.ds_persist)
        self.persistent_numel = sum(p.ds_numel for p in params if p.ds_persist)

    def observe(self, *_) -> None:
        live = sum(_nbytes(p) for p in self._partitioned if p.ds_status != self._absent)
        self.peak_bytes = max(self.peak_bytes, live)

    def __enter__(self) -> "GatheredPeak":
        for m in self._module.modules():
            self._handles += [m.register_forward_pre_hook(self.observe),
                              m.register_forward_hook(self.observe),
                              m.register_full_backward_pre_hook(self.observe),
                              m.register_full_backward_hook(self.observe)]
        return self

    def __exit__(self, *_) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
