"""Shape-only results shared by the fake (meta) implementations of every backward op: the
gradients have the shapes and layouts of the tensors they belong to."""

from __future__ import annotations

import torch


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
