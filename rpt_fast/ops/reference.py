"""Pure-PyTorch reference semantics of the residual encoder: the specification.

Every backend (Triton, native) is tested against these functions. They work in any
floating dtype, float64 included, and are differentiable through plain autograd, so the
``eager`` backend is simply these functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def residual_mlp_reference(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``LayerNorm(ReLU(x @ w1.T + b1) @ w2.T + b2) * ln_weight + ln_bias + x``.

    ``w1`` is (m, d) and ``w2`` is (d, m), as ``nn.Linear`` stores them; ``x`` is (..., d).
    """
    h = F.relu(F.linear(x, w1, b1))
    z = F.linear(h, w2, b2)
    return F.layer_norm(z, (z.shape[-1],), ln_weight, ln_bias, eps) + x


def grouped_residual_mlp_reference(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Row ``i`` of ``x`` (n, d) goes through MLP ``i``: the paper's "separate" variant.

    Shapes: w1 (n, m, d), b1 (n, m), w2 (n, d, m), b2 (n, d), ln_weight/ln_bias (n, d).
    Written as batched matmuls; it equals a loop of :func:`residual_mlp_reference` calls.
    """
    h = F.relu(torch.bmm(w1, x.unsqueeze(-1)).squeeze(-1) + b1)
    z = torch.bmm(w2, h.unsqueeze(-1)).squeeze(-1) + b2
    mean = z.mean(dim=-1, keepdim=True)
    var = (z - mean).square().mean(dim=-1, keepdim=True)
    zhat = (z - mean) * torch.rsqrt(var + eps)
    return zhat * ln_weight + ln_bias + x
