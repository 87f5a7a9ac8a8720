"""Triton kernels of the grouped ("separate") residual MLP: row ``i`` goes through MLP ``i``.

Each group is one row, so the work is GEMV-like and bound by reading the weights: every
kernel streams its weight tile once with elementwise multiply + ``tl.sum`` in fp32 (exact
fp32, no tensor cores needed) and splits the long reduction across programs, whose partial
results the next launch sums in a fixed order (deterministic, no atomics, no host sync).

Forward, 3 launches:
  1. grid (n, m-blocks): ``h = ReLU(w1 @ x + b1)``, reads w1 once.
  2. grid (n, d-blocks): ``z = w2 @ h + b2`` (fp32, kept for the backward) plus per-block sum
     and centered sum of squares of z, reads w2 once.
  3. grid (n, d-blocks): merges the block statistics (Chan et al.), writes y, mean, rstd.
Backward, 4 launches, each weight read once:
  1. grid (n, d-blocks): zhat from the saved z (no weight read), the LayerNorm weight/bias
     grads and per-block sums of dzhat and dzhat * zhat.
  2. grid (n, d-blocks, m-splits): dz from the merged sums; writes db2, dW2 = dz (x) h and
     per-d-block partials of dh = w2^T dz (reads w2 once).
  3. grid (n, m-blocks, d-splits): sums the dh partials, da = dh zeroed where h <= 0 (a NaN h
     passes dh, as torch's ReLU backward); writes db1, dW1 = da (x) x and
     per-m-block partials of w1^T da (reads w1 once).
  4. grid (n, d-blocks): dx = dy + the summed partials.
The split counts of launches 2 and 3 come from :func:`plan` (also behind :func:`launch_plan`):
with few groups (n = 10) the loop over the other weight dimension is cut into chunks so the
launch has enough programs to fill the GPU (>= ~2 per SM of an H200), and the chunk loop is
software-pipelined (``tl.range(num_stages=...)``). Inputs are contiguous (``_library``
requires it) and 16-byte aligned (copied here when not); the kernels address them through the
contiguous strides of their shapes, and run as their ``hinted`` variant when d and m are
multiples of 16, as ``plain`` otherwise (``rpt_fast.ops.specialise``). Gradients take the
layout of ``torch.empty_like`` of their parameter, as the fake implementations in ``_library``
do.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .aot import KernelSpec, make_signature, triton_type
from .launches import cdiv
from .specialise import Variants, aligned_contiguous, hinted, jit_variants

# Tile shapes and warps of each kernel; one config per kernel for every dtype (see aot_specs).
CONFIGS = {
    "hidden": {"BLOCK_M": 16, "BLOCK_D": 256, "num_warps": 4},
    "output": {"BLOCK_D": 32, "BLOCK_M": 128, "num_warps": 4},
    "norm": {"BLOCK_P": 256, "BLOCK_D": 1024, "num_warps": 4},
    "norm_grad": {"BLOCK_D": 256, "num_warps": 4},
    "up_grad": {"BLOCK_P": 64, "BLOCK_D": 64, "BLOCK_M": 64, "num_warps": 4},
    "down_grad": {"BLOCK_P": 16, "BLOCK_M": 64, "BLOCK_D": 128, "num_warps": 8},
    "input_grad": {"BLOCK_P": 16, "BLOCK_D": 256, "num_warps": 4},
}
NUM_STAGES = 1  # launch-level stages; the chunk loops of up_grad/down_grad set their own
LOOP_STAGES = 3  # tl.range(num_stages=...) of the weight-streaming chunk loops
TARGET_PROGRAMS = 264  # two programs per SM of an H200 (132 SMs) for the weight-reading launches


@triton.jit
def _up_projection(h_ptr, w2_ptr, b2_ptr, g, offs_d, mask_d, m,
                   stride_hn, stride_w2n, stride_w2d, stride_w2m, stride_b2n, stride_b2d,
                   BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """fp32 ``z[offs_d] = w2[g, offs_d, :] @ h[g] + b2[g, offs_d]`` for one block of d."""
    acc = tl.zeros([BLOCK_D, BLOCK_M], dtype=tl.float32)
    w_rows = w2_ptr + g * stride_w2n + offs_d[:, None] * stride_w2d
    for m0 in range(0, m, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < m
        hv = tl.load(h_ptr + g * stride_hn + offs_m, mask=mask_m, other=0.0).to(tl.float32)
        w = tl.load(w_rows + offs_m[None, :] * stride_w2m,
                    mask=mask_d[:, None] & mask_m[None, :], other=0.0).to(tl.float32)
        acc += w * hv[None, :]
    b = tl.load(b2_ptr + g * stride_b2n + offs_d * stride_b2d, mask=mask_d, other=0.0)
    return tl.sum(acc, axis=1) + b.to(tl.float32)


@jit_variants(shapes=("d", "m", "stride_xn", "stride_w1n", "stride_w1m", "stride_b1n",
                      "stride_hn"))
def _grouped_hidden_kernel(x_ptr, w1_ptr, b1_ptr, h_ptr, d, m,
                           stride_xn, stride_xd, stride_w1n, stride_w1m, stride_w1d,
                           stride_b1n, stride_b1m, stride_hn,
                           BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """Forward 1: ``h[g, block] = ReLU(w1[g, block] @ x[g] + b1[g, block])``."""
    g = tl.program_id(0).to(tl.int64)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < m
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    w_rows = w1_ptr + g * stride_w1n + offs_m[:, None] * stride_w1m
    for d0 in range(0, d, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < d
        xv = tl.load(x_ptr + g * stride_xn + offs_d * stride_xd, mask=mask_d, other=0.0)
        w = tl.load(w_rows + offs_d[None, :] * stride_w1d,
                    mask=mask_m[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
        acc += w * xv.to(tl.float32)[None, :]
    b = tl.load(b1_ptr + g * stride_b1n + offs_m * stride_b1m, mask=mask_m, other=0.0)
    pre = tl.sum(acc, axis=1) + b.to(tl.float32)
    hv = tl.maximum(pre, 0.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(h_ptr + g * stride_hn + offs_m, hv.to(h_ptr.dtype.element_ty), mask=mask_m)


@jit_variants(counts=("num_parts",),
              shapes=("d", "m", "stride_hn", "stride_w2n", "stride_w2d", "stride_b2n"))
def _grouped_output_kernel(h_ptr, w2_ptr, b2_ptr, z_ptr, part_sum_ptr, part_m2_ptr,
                           d, m, num_parts,
                           stride_hn, stride_w2n, stride_w2d, stride_w2m, stride_b2n, stride_b2d,
                           BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """Forward 2: fp32 ``z`` of one d-block, its sum and its sum of squares about its mean."""
    g = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    offs_d = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < d
    z = _up_projection(h_ptr, w2_ptr, b2_ptr, g, offs_d, mask_d, m,
                       stride_hn, stride_w2n, stride_w2d, stride_w2m, stride_b2n, stride_b2d,
                       BLOCK_D, BLOCK_M)
    tl.store(z_ptr + g * d + offs_d, z, mask=mask_d)
    count = tl.minimum(d - pid * BLOCK_D, BLOCK_D).to(tl.float32)
    block_sum = tl.sum(tl.where(mask_d, z, 0.0), axis=0)
    centered = tl.where(mask_d, z - block_sum / count, 0.0)
    tl.store(part_sum_ptr + g * num_parts + pid, block_sum)
    tl.store(part_m2_ptr + g * num_parts + pid, tl.sum(centered * centered, axis=0))


@jit_variants(counts=("num_parts",),
              shapes=("d", "stride_xn", "stride_lwn", "stride_lbn", "stride_yn"))
def _grouped_norm_kernel(x_ptr, z_ptr, part_sum_ptr, part_m2_ptr, lnw_ptr, lnb_ptr,
                         y_ptr, mean_ptr, rstd_ptr, d, num_parts, eps,
                         stride_xn, stride_xd, stride_lwn, stride_lwd, stride_lbn, stride_lbd,
                         stride_yn, stride_yd,
                         PART_D: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """Forward 3: merges the PART_D-wide block statistics, writes y (and mean/rstd once)."""
    g = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    total = tl.zeros([BLOCK_P], dtype=tl.float32)
    for p0 in range(0, num_parts, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        total += tl.load(part_sum_ptr + g * num_parts + offs_p, mask=offs_p < num_parts, other=0.0)
    mean = tl.sum(total, axis=0) / d
    m2 = tl.zeros([BLOCK_P], dtype=tl.float32)
    for p0 in range(0, num_parts, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < num_parts
        block_sum = tl.load(part_sum_ptr + g * num_parts + offs_p, mask=mask_p, other=0.0)
        block_m2 = tl.load(part_m2_ptr + g * num_parts + offs_p, mask=mask_p, other=0.0)
        count = tl.maximum(tl.minimum(d - offs_p * PART_D, PART_D), 1).to(tl.float32)
        shift = block_sum / count - mean
        m2 += tl.where(mask_p, block_m2 + count * shift * shift, 0.0)
    rstd = tl.rsqrt(tl.sum(m2, axis=0) / d + eps)
    offs_d = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < d
    z = tl.load(z_ptr + g * d + offs_d, mask=mask_d, other=0.0)
    w = tl.load(lnw_ptr + g * stride_lwn + offs_d * stride_lwd, mask=mask_d, other=0.0)
    b = tl.load(lnb_ptr + g * stride_lbn + offs_d * stride_lbd, mask=mask_d, other=0.0)
    xv = tl.load(x_ptr + g * stride_xn + offs_d * stride_xd, mask=mask_d, other=0.0)
    y = (z - mean) * rstd * w.to(tl.float32) + b.to(tl.float32) + xv.to(tl.float32)
    tl.store(y_ptr + g * stride_yn + offs_d * stride_yd, y.to(y_ptr.dtype.element_ty), mask=mask_d)
    if pid == 0:
        tl.store(mean_ptr + g, mean)
        tl.store(rstd_ptr + g, rstd)


@jit_variants(counts=("num_parts",),
              shapes=("d", "stride_dyn", "stride_lwn", "stride_dlwn", "stride_dlbn"))
def _grouped_norm_grad_kernel(dy_ptr, z_ptr, lnw_ptr, mean_ptr, rstd_ptr,
                              dlnw_ptr, dlnb_ptr, part_a_ptr, part_b_ptr, d, num_parts,
                              stride_dyn, stride_dyd, stride_lwn, stride_lwd,
                              stride_dlwn, stride_dlwd, stride_dlbn, stride_dlbd,
                              BLOCK_D: tl.constexpr):
    """Backward 1: zhat of the saved z; LayerNorm affine grads; block sums of dzhat, dzhat*zhat."""
    g = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    offs_d = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < d
    z = tl.load(z_ptr + g * d + offs_d, mask=mask_d, other=0.0)
    zhat = (z - tl.load(mean_ptr + g)) * tl.load(rstd_ptr + g)
    dy = tl.load(dy_ptr + g * stride_dyn + offs_d * stride_dyd, mask=mask_d, other=0.0)
    w = tl.load(lnw_ptr + g * stride_lwn + offs_d * stride_lwd, mask=mask_d, other=0.0)
    dy = dy.to(tl.float32)
    dzhat = dy * w.to(tl.float32)
    tl.store(dlnw_ptr + g * stride_dlwn + offs_d * stride_dlwd,
             (dy * zhat).to(dlnw_ptr.dtype.element_ty), mask=mask_d)
    tl.store(dlnb_ptr + g * stride_dlbn + offs_d * stride_dlbd,
             dy.to(dlnb_ptr.dtype.element_ty), mask=mask_d)
    tl.store(part_a_ptr + g * num_parts + pid, tl.sum(tl.where(mask_d, dzhat, 0.0), axis=0))
    tl.store(part_b_ptr + g * num_parts + pid,
             tl.sum(tl.where(mask_d, dzhat * zhat, 0.0), axis=0))


@jit_variants(counts=("num_parts",),
              shapes=("d", "m", "stride_dyn", "stride_hn", "stride_w2n", "stride_w2d", "stride_lwn",
                      "stride_db2n", "stride_dw2n", "stride_dw2d"))
def _grouped_up_grad_kernel(dy_ptr, h_ptr, w2_ptr, z_ptr, lnw_ptr, mean_ptr, rstd_ptr,
                            part_a_ptr, part_b_ptr, db2_ptr, dw2_ptr, dh_part_ptr,
                            d, m, num_parts, chunk_m,
                            stride_dyn, stride_dyd, stride_hn, stride_w2n, stride_w2d, stride_w2m,
                            stride_lwn, stride_lwd, stride_db2n, stride_db2d,
                            stride_dw2n, stride_dw2d, stride_dw2m,
                            BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                            LOOP_STAGES: tl.constexpr):
    """Backward 2: dz of one d-block; over one chunk of m: dW2 = dz (x) h and w2^T dz."""
    g = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    split = tl.program_id(2)
    sum_a = tl.zeros([BLOCK_P], dtype=tl.float32)
    sum_b = tl.zeros([BLOCK_P], dtype=tl.float32)
    for p0 in range(0, num_parts, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < num_parts
        sum_a += tl.load(part_a_ptr + g * num_parts + offs_p, mask=mask_p, other=0.0)
        sum_b += tl.load(part_b_ptr + g * num_parts + offs_p, mask=mask_p, other=0.0)
    mean_a = tl.sum(sum_a, axis=0) / d
    mean_b = tl.sum(sum_b, axis=0) / d
    offs_d = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < d
    dy = tl.load(dy_ptr + g * stride_dyn + offs_d * stride_dyd, mask=mask_d, other=0.0)
    w = tl.load(lnw_ptr + g * stride_lwn + offs_d * stride_lwd, mask=mask_d, other=0.0)
    z = tl.load(z_ptr + g * d + offs_d, mask=mask_d, other=0.0)
    rstd = tl.load(rstd_ptr + g)
    zhat = (z - tl.load(mean_ptr + g)) * rstd
    dz = (dy.to(tl.float32) * w.to(tl.float32) - mean_a - zhat * mean_b) * rstd
    dz = tl.where(mask_d, dz, 0.0)
    if split == 0:
        tl.store(db2_ptr + g * stride_db2n + offs_d * stride_db2d,
                 dz.to(db2_ptr.dtype.element_ty), mask=mask_d)
    w_rows = w2_ptr + g * stride_w2n + offs_d[:, None] * stride_w2d
    dw_rows = dw2_ptr + g * stride_dw2n + offs_d[:, None] * stride_dw2d
    dh_row = dh_part_ptr + (g * tl.num_programs(1) + pid) * m
    lo = split * chunk_m
    hi = tl.minimum(m, lo + chunk_m)
    for m0 in tl.range(lo, hi, BLOCK_M, num_stages=LOOP_STAGES):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < hi
        mask = mask_d[:, None] & mask_m[None, :]
        hv = tl.load(h_ptr + g * stride_hn + offs_m, mask=mask_m, other=0.0).to(tl.float32)
        tl.store(dw_rows + offs_m[None, :] * stride_dw2m,
                 (dz[:, None] * hv[None, :]).to(dw2_ptr.dtype.element_ty), mask=mask)
        w2 = tl.load(w_rows + offs_m[None, :] * stride_w2m, mask=mask, other=0.0).to(tl.float32)
        tl.store(dh_row + offs_m, tl.sum(w2 * dz[:, None], axis=0), mask=mask_m)


@jit_variants(counts=("num_dh_parts",),
              shapes=("d", "m", "stride_xn", "stride_w1n", "stride_w1m", "stride_hn", "stride_db1n",
                      "stride_dw1n", "stride_dw1m"))
def _grouped_down_grad_kernel(x_ptr, w1_ptr, h_ptr, dh_part_ptr, db1_ptr, dw1_ptr, dx_part_ptr,
                              d, m, num_dh_parts, chunk_d,
                              stride_xn, stride_xd, stride_w1n, stride_w1m, stride_w1d,
                              stride_hn, stride_db1n, stride_db1m,
                              stride_dw1n, stride_dw1m, stride_dw1d,
                              BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_D: tl.constexpr, LOOP_STAGES: tl.constexpr):
    """Backward 3: da of one m-block; over one chunk of d: dW1 = da (x) x and w1^T da."""
    g = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    split = tl.program_id(2)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < m
    dh = tl.zeros([BLOCK_P, BLOCK_M], dtype=tl.float32)
    for p0 in range(0, num_dh_parts, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        ptrs = dh_part_ptr + (g * num_dh_parts + offs_p[:, None]) * m + offs_m[None, :]
        dh += tl.load(ptrs, mask=(offs_p[:, None] < num_dh_parts) & mask_m[None, :], other=0.0)
    hv = tl.load(h_ptr + g * stride_hn + offs_m, mask=mask_m, other=0.0).to(tl.float32)
    da = tl.where(hv <= 0.0, 0.0, tl.sum(dh, axis=0))  # NaN h passes dh, as torch's ReLU
    if split == 0:
        tl.store(db1_ptr + g * stride_db1n + offs_m * stride_db1m,
                 da.to(db1_ptr.dtype.element_ty), mask=mask_m)
    w_rows = w1_ptr + g * stride_w1n + offs_m[:, None] * stride_w1m
    dw_rows = dw1_ptr + g * stride_dw1n + offs_m[:, None] * stride_dw1m
    dx_row = dx_part_ptr + (g * tl.num_programs(1) + pid) * d
    lo = split * chunk_d
    hi = tl.minimum(d, lo + chunk_d)
    for d0 in tl.range(lo, hi, BLOCK_D, num_stages=LOOP_STAGES):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < hi
        mask = mask_m[:, None] & mask_d[None, :]
        xv = tl.load(x_ptr + g * stride_xn + offs_d * stride_xd, mask=mask_d, other=0.0)
        tl.store(dw_rows + offs_d[None, :] * stride_dw1d,
                 (da[:, None] * xv.to(tl.float32)[None, :]).to(dw1_ptr.dtype.element_ty),
                 mask=mask)
        w1 = tl.load(w_rows + offs_d[None, :] * stride_w1d, mask=mask, other=0.0).to(tl.float32)
        tl.store(dx_row + offs_d, tl.sum(w1 * da[:, None], axis=0), mask=mask_d)


@jit_variants(counts=("num_parts",), shapes=("d", "stride_dyn", "stride_dxn"))
def _grouped_input_grad_kernel(dy_ptr, dx_part_ptr, dx_ptr, d, num_parts,
                               stride_dyn, stride_dyd, stride_dxn, stride_dxd,
                               BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """Backward 4: ``dx = dy + sum of the w1^T da partials`` (the residual plus the MLP path)."""
    g = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < d
    acc = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    for p0 in range(0, num_parts, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        ptrs = dx_part_ptr + (g * num_parts + offs_p[:, None]) * d + offs_d[None, :]
        acc += tl.load(ptrs, mask=(offs_p[:, None] < num_parts) & mask_d[None, :], other=0.0)
    dy = tl.load(dy_ptr + g * stride_dyn + offs_d * stride_dyd, mask=mask_d, other=0.0)
    dx = tl.sum(acc, axis=0) + dy.to(tl.float32)
    tl.store(dx_ptr + g * stride_dxn + offs_d * stride_dxd,
             dx.to(dx_ptr.dtype.element_ty), mask=mask_d)


def _splits(programs: int, tiles: int) -> tuple[int, int]:
    """(splits, tiles per split) of a loop over ``tiles`` tiles, so that a launch of
    ``programs`` programs per split reaches TARGET_PROGRAMS (never more splits than tiles)."""
    want = max(1, min(tiles, cdiv(TARGET_PROGRAMS, programs)))
    per = cdiv(tiles, want)
    return cdiv(tiles, per), per


def plan(n: int, d: int, m: int) -> dict[str, dict]:
    """Grid and runtime tiling of every launch at shape (n, d, m): the one source the launchers
    and :func:`launch_plan` read. ``parts`` counts the partial rows a launch writes per group."""
    c = CONFIGS
    out_parts = cdiv(d, c["output"]["BLOCK_D"])
    stat_parts = cdiv(d, c["norm_grad"]["BLOCK_D"])
    dh_parts = cdiv(d, c["up_grad"]["BLOCK_D"])
    dx_parts = cdiv(m, c["down_grad"]["BLOCK_M"])
    up_splits, up_tiles = _splits(n * dh_parts, cdiv(m, c["up_grad"]["BLOCK_M"]))
    down_splits, down_tiles = _splits(n * dx_parts, cdiv(d, c["down_grad"]["BLOCK_D"]))
    return {
        "hidden": {"grid": (n, cdiv(m, c["hidden"]["BLOCK_M"]))},
        "output": {"grid": (n, out_parts), "parts": out_parts},
        "norm": {"grid": (n, cdiv(d, c["norm"]["BLOCK_D"]))},
        "norm_grad": {"grid": (n, stat_parts), "parts": stat_parts},
        "up_grad": {"grid": (n, dh_parts, up_splits), "parts": dh_parts,
                    "chunk": up_tiles * c["up_grad"]["BLOCK_M"]},
        "down_grad": {"grid": (n, dx_parts, down_splits), "parts": dx_parts,
                      "chunk": down_tiles * c["down_grad"]["BLOCK_D"]},
        "input_grad": {"grid": (n, cdiv(d, c["input_grad"]["BLOCK_D"]))},
    }


FORWARD_LAUNCHES = ("hidden", "output", "norm")
BACKWARD_LAUNCHES = ("norm_grad", "up_grad", "down_grad", "input_grad")


def launch_plan(n: int, d: int, m: int, itemsize: int) -> dict[str, list[tuple]]:
    """``{"forward": [(name, programs, bytes_moved, flops), ...], "backward": [...]}`` of the
    launches at shape (n, d, m) with ``itemsize``-byte inputs (fp32 scratch and statistics),
    from :func:`plan`. Bytes count every load and store of valid elements, re-reads of small
    operands by several programs included; FLOPs count multiply-adds as 2."""
    p = plan(n, d, m)
    s, f = itemsize, 4
    nd, nm, ndm = n * d, n * m, n * d * m
    programs = {name: _prod(entry["grid"]) for name, entry in p.items()}
    out_parts, stat_parts = p["output"]["parts"], p["norm_grad"]["parts"]
    dh_parts, dx_parts = p["up_grad"]["parts"], p["down_grad"]["parts"]
    up_splits, down_splits = p["up_grad"]["grid"][2], p["down_grad"]["grid"][2]
    moved = {
        "hidden": ndm * s + programs["hidden"] * d * s + 2 * nm * s,
        "output": ndm * s + programs["output"] * m * s + nd * s + nd * f + 2 * n * out_parts * f,
        "norm": programs["norm"] * 2 * out_parts * f + nd * f + 4 * nd * s + 2 * n * f,
        "norm_grad": nd * f + 4 * nd * s + 2 * n * f + 2 * n * stat_parts * f,
        "up_grad": (2 * ndm * s + n * dh_parts * m * s + programs["up_grad"] * 2 * stat_parts * f
                    + n * up_splits * d * (2 * s + f) + nd * s + n * dh_parts * m * f),
        "down_grad": (2 * ndm * s + n * down_splits * dh_parts * m * f + n * down_splits * m * s
                      + n * dx_parts * d * s + nm * s + n * dx_parts * d * f),
        "input_grad": n * dx_parts * d * f + 2 * nd * s,
    }
    flops = {
        "hidden": 2 * ndm, "output": 2 * ndm, "norm": 8 * nd, "norm_grad": 6 * nd,
        "up_grad": 3 * ndm, "down_grad": 3 * ndm, "input_grad": n * dx_parts * d,
    }
    row = lambda name: (name, programs[name], moved[name], flops[name])  # noqa: E731
    return {"forward": [row(k) for k in FORWARD_LAUNCHES],
            "backward": [row(k) for k in BACKWARD_LAUNCHES]}


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _launch(kernel: Variants, name: str, grid, shapes_hinted: bool, *args, **constexprs):
    config = CONFIGS[name]
    blocks = {k: v for k, v in config.items() if k != "num_warps"}
    kernel.pick(shapes_hinted)[grid](*args, **blocks, **constexprs,
                                     num_warps=config["num_warps"], num_stages=NUM_STAGES)


def _strides(t) -> tuple:
    """The strides of ``t``'s shape laid out contiguously. ``t`` is contiguous, so these address
    its elements; unlike ``t.stride()`` they never differ at a size-1 dimension, so every
    integer a kernel gets follows from n, d and m (the variant that runs is one AOT compiled)."""
    strides, step = [], 1
    for size in reversed(t.shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def grouped_residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
    """(y, h, z, mean, rstd) of the grouped op in 3 launches, z the fp32 (n, d) pre-norm rows
    kept for the backward; see the module docstring."""
    x, w1, b1, w2, b2, ln_weight, ln_bias = (
        aligned_contiguous(t) for t in (x, w1, b1, w2, b2, ln_weight, ln_bias))
    n, d = x.shape
    m = w1.shape[1]
    both, rows = hinted(d, m), hinted(d)
    p = plan(n, d, m)
    f32 = {"device": x.device, "dtype": torch.float32}
    num_parts = p["output"]["parts"]
    h = torch.empty((n, m), device=x.device, dtype=x.dtype)
    z = torch.empty((n, d), **f32)
    part_sum = torch.empty((n, num_parts), **f32)
    part_m2 = torch.empty((n, num_parts), **f32)
    y = torch.empty_like(x)
    mean = torch.empty((n,), **f32)
    rstd = torch.empty((n,), **f32)

    _launch(_grouped_hidden_kernel, "hidden", p["hidden"]["grid"], both,
            x, w1, b1, h, d, m, *_strides(x), *_strides(w1), *_strides(b1), m)
    _launch(_grouped_output_kernel, "output", p["output"]["grid"], both,
            h, w2, b2, z, part_sum, part_m2, d, m, num_parts, m, *_strides(w2), *_strides(b2))
    _launch(_grouped_norm_kernel, "norm", p["norm"]["grid"], rows,
            x, z, part_sum, part_m2, ln_weight, ln_bias, y, mean, rstd, d, num_parts, eps,
            *_strides(x), *_strides(ln_weight), *_strides(ln_bias), *_strides(y),
            PART_D=CONFIGS["output"]["BLOCK_D"])
    return y, h, z, mean, rstd


def grouped_residual_mlp_backward(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd):
    """(dx, dw1, db1, dw2, db2, dln_weight, dln_bias) in 4 launches; see the module docstring.
    ``z`` is the forward's fp32 (n, d) z: no launch re-reads w2 to recompute it."""
    n, d = x.shape
    m = w1.shape[1]
    if z.shape != (n, d) or z.dtype != torch.float32 or not z.is_contiguous():
        raise ValueError(f"z: expected the forward's contiguous float32 ({n}, {d}) z, got "
                         f"{z.dtype} {tuple(z.shape)}")
    dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd = (
        aligned_contiguous(t) for t in (dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd))
    both, rows = hinted(d, m), hinted(d)
    p = plan(n, d, m)
    f32 = {"device": x.device, "dtype": torch.float32}
    stat_parts, dh_parts = p["norm_grad"]["parts"], p["up_grad"]["parts"]
    dx_parts = p["down_grad"]["parts"]
    part_a = torch.empty((n, stat_parts), **f32)
    part_b = torch.empty((n, stat_parts), **f32)
    dh_part = torch.empty((n, dh_parts, m), **f32)
    dx_part = torch.empty((n, dx_parts, d), **f32)
    dx = torch.empty_like(x)
    dw1 = torch.empty_like(w1)
    db1 = w1.new_empty(w1.shape[:-1])
    dw2 = torch.empty_like(w2)
    db2 = torch.empty_like(b2)
    dln_weight = torch.empty_like(ln_weight)
    dln_bias = torch.empty_like(ln_weight)

    _launch(_grouped_norm_grad_kernel, "norm_grad", p["norm_grad"]["grid"], rows,
            dy, z, ln_weight, mean, rstd, dln_weight, dln_bias, part_a, part_b, d, stat_parts,
            *_strides(dy), *_strides(ln_weight), *_strides(dln_weight), *_strides(dln_bias))
    _launch(_grouped_up_grad_kernel, "up_grad", p["up_grad"]["grid"], both,
            dy, h, w2, z, ln_weight, mean, rstd, part_a, part_b, db2, dw2, dh_part,
            d, m, stat_parts, p["up_grad"]["chunk"], *_strides(dy), m, *_strides(w2),
            *_strides(ln_weight), *_strides(db2), *_strides(dw2), LOOP_STAGES=LOOP_STAGES)
    _launch(_grouped_down_grad_kernel, "down_grad", p["down_grad"]["grid"], both,
            x, w1, h, dh_part, db1, dw1, dx_part, d, m, dh_parts, p["down_grad"]["chunk"],
            *_strides(x), *_strides(w1), m, *_strides(db1), *_strides(dw1),
            LOOP_STAGES=LOOP_STAGES)
    _launch(_grouped_input_grad_kernel, "input_grad", p["input_grad"]["grid"], rows,
            dy, dx_part, dx, d, dx_parts, *_strides(dy), *_strides(dx))
    return dx, dw1, db1, dw2, db2, dln_weight, dln_bias


# fp32 scratch / statistics pointers of each kernel; every other pointer has the dtype of x.
_FP32_POINTERS = {
    "z_ptr", "part_sum_ptr", "part_m2_ptr", "mean_ptr", "rstd_ptr",
    "part_a_ptr", "part_b_ptr", "dh_part_ptr", "dx_part_ptr",
}
# Last-dimension strides: 1 (the launchers pass contiguous strides), which Triton's launcher
# specialises in both variants.
_UNIT_STRIDES = {
    "stride_xd", "stride_w1d", "stride_b1m", "stride_w2m", "stride_b2d", "stride_lwd",
    "stride_lbd", "stride_yd", "stride_dyd", "stride_dxd", "stride_dlwd", "stride_dlbd",
    "stride_db2d", "stride_dw2m", "stride_db1m", "stride_dw1d",
}
_KERNELS = {
    "hidden": _grouped_hidden_kernel,
    "output": _grouped_output_kernel,
    "norm": _grouped_norm_kernel,
    "norm_grad": _grouped_norm_grad_kernel,
    "up_grad": _grouped_up_grad_kernel,
    "down_grad": _grouped_down_grad_kernel,
    "input_grad": _grouped_input_grad_kernel,
}


def aot_specs(dtype: torch.dtype) -> list[KernelSpec]:
    """The one config of each kernel, in both variants (``rpt_fast.ops.specialise``), for inputs
    of ``dtype`` (see ``ops/aot.py``): unit strides are constant 1, the ``hinted`` variant's
    other integers multiples of 16 (but the counts), the ``plain`` variant's anything."""
    io_type = triton_type(dtype)
    specs = []
    for name, variants in _KERNELS.items():
        config = CONFIGS[name]
        constexprs = {k: v for k, v in config.items() if k != "num_warps"}
        if name == "norm":
            constexprs["PART_D"] = CONFIGS["output"]["BLOCK_D"]
        kernel = variants.hinted
        if "LOOP_STAGES" in kernel.arg_names:
            constexprs["LOOP_STAGES"] = LOOP_STAGES
        constexprs.update({arg: 1 for arg in kernel.arg_names if arg in _UNIT_STRIDES})
        pointers = {
            arg: "*fp32" if arg in _FP32_POINTERS else f"*{io_type}"
            for arg in kernel.arg_names
            if arg.endswith("_ptr")
        }
        signature = make_signature(kernel, pointers, constexprs, {"eps": "fp32"} if name == "norm" else None)
        for variant, jitted in zip(variants._fields, variants):
            divisible = tuple(arg for arg, ty in signature.items()
                              if ty == "i32" and arg not in jitted.unspecialised)
            specs.append(KernelSpec(f"{name} ({variant})", jitted, signature, constexprs,
                                    config["num_warps"], NUM_STAGES, divisible))
    return specs
