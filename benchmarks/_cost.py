"""The work an op must do, whatever the implementation: bytes that must move and FLOPs.

Shared op (one MLP, M rows) and grouped op (one MLP per row, g = M groups); e is the element size,
LayerNorm statistics are fp32. Per group the weights are W = 2 m d + m + 3 d elements.
  forward:  read x, weights; write y and the saved h (M m) and mean/rstd (2 M fp32)
            bytes = e (2 M d + g W + M m) + 8 M,          FLOPs = 4 M d m
  backward: read dy, x, h, w1, w2, b2, ln_weight, stats; write dx and all weight gradients
            bytes = e (3 M d + M m + g (4 m d + m + 5 d)) + 8 M,   FLOPs = 8 M d m
  full = forward + backward.
"""

from __future__ import annotations


def op_cost(op: str, mode: str, M: int, d: int, m: int, e: int) -> tuple[int, int]:
    """(bytes, flops) of ``op`` ("shared" | "grouped") in ``mode`` ("fwd" | "bwd" | "full")."""
    g = M if op == "grouped" else 1
    fwd = (e * (2 * M * d + g * (2 * m * d + m + 3 * d) + M * m) + 8 * M, 4 * M * d * m)
    bwd = (e * (3 * M * d + M * m + g * (4 * m * d + m + 5 * d)) + 8 * M, 8 * M * d * m)
    if mode == "fwd":
        return fwd
    if mode == "bwd":
        return bwd
    return fwd[0] + bwd[0], fwd[1] + bwd[1]
