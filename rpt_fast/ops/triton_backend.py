"""The ``triton`` backend: availability rules plus the launchers of each Triton kernel family."""

from __future__ import annotations

import os

import torch

from .triton_grouped import grouped_residual_mlp_backward, grouped_residual_mlp_forward
from .triton_residual_mlp import MAX_D, residual_mlp_backward, residual_mlp_forward

__all__ = [
    "unavailable_reason",
    "residual_mlp_forward",
    "residual_mlp_backward",
    "grouped_residual_mlp_forward",
    "grouped_residual_mlp_backward",
]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """True when Triton runs kernels on CPU tensors through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(x: torch.Tensor) -> str | None:
    if x.dtype not in _KERNEL_DTYPES:
        return f"the Triton kernels take float32, float16 or bfloat16, got {x.dtype}"
    if x.shape[-1] > MAX_D:
        return f"the Triton kernels hold a row in registers and take d <= {MAX_D}, got d={x.shape[-1]}"
    if x.device.type == "cuda":
        return None
    if x.device.type == "cpu" and interpreting():
        if x.dtype == torch.bfloat16:
            return "the Triton interpreter computes bfloat16 tl.dot wrongly; use float32/float16"
        return None
    return (
        f"Triton runs on CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before "
        f"import), got a tensor on {x.device}"
    )
