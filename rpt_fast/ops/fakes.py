"""Shape-only results shared by the fake (meta) implementations of the ops: the gradients have
the shapes and layouts of the tensors they belong to; the LayerNorm statistics the dtype the
kernels keep them in."""

from __future__ import annotations

import torch


def stats_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the saved LayerNorm mean/rstd: float64 for float64 x (only the native
    backend runs float64), float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def gradients_like(x, w1, w2, b2, ln_weight) -> tuple[torch.Tensor, ...]:
    """(dx, dw1, db1, dw2, db2, dln_weight, dln_bias), empty, for the shared or grouped op."""
    return (
        torch.empty_like(x),
        torch.empty_like(w1),
        w1.new_empty(w1.shape[:-1]),
        torch.empty_like(w2),
        torch.empty_like(b2),
        torch.empty_like(ln_weight),
        torch.empty_like(ln_weight),
    )
