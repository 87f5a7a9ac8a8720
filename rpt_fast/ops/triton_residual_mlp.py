"""Launch plans of the shared residual encoder's Triton kernels, and their fixed config tables.

Forward, 3 kernels: F1 ``h = relu(x W1^T + b1)``; F2 ``zb = h W2^T`` (fp32 split-K partials
for prompt-sized inputs, which F3 sums and saves as zb; zb itself in x's dtype for many rows);
F3 adds b2, LayerNorm + affine + residual (writes y, mean, rstd). zb is saved for the
backward, which so needs no GEMM to rebuild z = zb + b2.
Backward, 3 kernels: B1 LayerNorm backward (dz; for many rows also fp32 partials of
dln_weight, dln_bias, db2); B2 ``da = dz W2``, zeroed where ``h <= 0`` (a NaN h passes its
gradient, as torch's threshold_backward; for few rows also db1, and dW2 = dz^T h from the
same dz tiles); B3 ``dx = da W1 + dy``, dW1 (from the same da tiles for few rows; with db1
and dW2 split over the rows for many), dln_weight, dln_bias and db2.
The kernels that reduce across programs with arrival counters (F1 for few rows, B2 and B3)
count in a buffer made for that call alone and zeroed before them: by a fill launch F0 in the
forward, by B1 in the backward. No result depends on what an earlier launch left behind.

Two paths, chosen from M alone: up to ``SMALL_M`` rows (the prompt) the split-K kernels of
``triton_splitk`` (every weight-reading launch gets >= ``TARGET_PROGRAMS`` programs where the
reduction is long enough); above it the tiled kernels of ``triton_matmul``.

Everything is decided in Python from shapes only (no autotuning, no host-device sync): the
``forward_plan`` / ``backward_plan`` functions return the list of :class:`Launch` records that
the launchers run, ``rpt_fast.ops.plan`` prices (cost model) and ``rpt_fast.ops.aot`` compiles.
Inputs are contiguous (the functional layer guarantees it) and 16-byte aligned (copied here when
a view starts elsewhere), and each kernel runs as its ``hinted`` variant when d and m (for the
row kernels: d) are multiples of 16, as its ``plain`` one otherwise (``rpt_fast.ops.specialise``):
every variant Triton's launcher can compile is one the AOT check compiles.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .launches import Launch, ZeroFill, cdiv, tensor_bytes, zero_fill
from .precision import dot_precision
from .specialise import aligned_contiguous, hinted
from .triton_layer_norm import (
    layer_norm_backward_kernel,
    layer_norm_backward_wide_kernel,
    layer_norm_forward_kernel,
    layer_norm_forward_wide_kernel,
)
from .triton_matmul import (
    EPI_BIAS_RELU,
    EPI_NONE,
    EPI_RELU_MASK,
    backward_grads_kernel,
    matmul_kernel,
)
from .triton_splitk import (
    da_dw2_kernel,
    dx_dw1_kernel,
    splitk_bias_relu_kernel,
    splitk_partials_kernel,
)


class RowKernelConfig(NamedTuple):
    block_n: int  # holds a whole row: d <= block_n
    block_r: int  # rows per step
    num_warps: int
    wide: bool  # F3 and B1 walk rows in column chunks (rows too wide for registers)


class MatmulConfig(NamedTuple):
    block_m: int
    block_n: int
    block_k: int
    group_m: int
    num_warps: int
    num_stages: int


class SplitKConfig(NamedTuple):
    block_ns: tuple  # column block widths tried in order (the first reaching TARGET_PROGRAMS)
    block_k: int
    num_warps: int
    num_stages: int


class SplitK(NamedTuple):
    """One split-K problem: ``blocks`` column blocks x ``splits`` chunks of ``k_chunk``."""

    block_n: int
    k_chunk: int
    splits: int
    blocks: int


# Prompt-sized inputs: all rows in one tile (BLOCK_M = next power of 2, >= 16).
SMALL_M = 128
# Programs each weight-reading launch aims for: about one per SM of an H100/H200 (132 SMs);
# every extra split adds an (M, cols) fp32 partial to write and read back.
TARGET_PROGRAMS = 128
# Forward (F1, F2) and backward (B2, B3) split-K kernels: (block_ns, block_k, warps, stages),
# each spill-free as compiled by triton 3.6 and 3.9 (fp32: 16-deep steps and 2 stages forward,
# 32 and 3 backward), for d and m multiples of 16 (the ``hinted`` kernels,
# rpt_fast.ops.specialise).
SPLITK_CONFIGS = {
    torch.float32: SplitKConfig((32, 16), 16, 8, 2),
    torch.float16: SplitKConfig((32, 16), 64, 4, 3),
    torch.bfloat16: SplitKConfig((32, 16), 64, 4, 3),
}
SPLITK_GRAD_CONFIGS = {
    torch.float32: SplitKConfig((32, 16), 32, 8, 3),
    torch.float16: SplitKConfig((32, 16), 64, 4, 3),
    torch.bfloat16: SplitKConfig((32, 16), 64, 4, 3),
}
# Many rows, d and m multiples of 16: F1, F2 and B2 (M output rows), and B3 (dW1, dW2 reduce
# over M; dx has M rows).
ROW_MATMUL_CONFIGS = {
    torch.float32: MatmulConfig(128, 64, 32, 8, 8, 3),
    torch.float16: MatmulConfig(128, 128, 64, 8, 8, 3),
    torch.bfloat16: MatmulConfig(128, 128, 64, 8, 8, 3),
}
GRAD_MATMUL_CONFIGS = {
    torch.float32: MatmulConfig(64, 64, 32, 8, 8, 3),
    torch.float16: MatmulConfig(128, 128, 64, 8, 8, 3),
    torch.bfloat16: MatmulConfig(128, 128, 64, 8, 8, 3),
}
# Any other d or m runs the ``plain`` kernels: no divisibility hints, so scalar loads and more
# address registers. These smaller configs keep every one of them spill-free (sm_80, sm_90,
# all dtypes, triton 3.6 and 3.9; in fp32 split-K with BLOCK_K 32 or 3 stages, ptxas squeezes
# B2/B3 into 32-80 registers and spills, up to kilobytes with triton 3.9's CUDA 13 ptxas).
PLAIN_SPLITK_CONFIG = SplitKConfig((32, 16), 16, 8, 2)
PLAIN_MATMUL_CONFIG = MatmulConfig(64, 64, 32, 8, 8, 3)
# dW1/dW2 (large M) reduce over at least this many BLOCK_K steps of rows per split.
MIN_GRAD_CHUNK_STEPS = 8
# The LayerNorm partials' column sums inside B3 (large M): BLOCK_P rows x BLOCK_C columns.
REDUCE_BLOCK_P = 16
REDUCE_BLOCK_C = 128
# Row kernels (F3, B1): the first config whose block_n holds a whole row.
ROW_KERNEL_CONFIGS = (
    RowKernelConfig(256, 4, 8, False),
    RowKernelConfig(1024, 2, 4, False),
    RowKernelConfig(4096, 1, 16, False),
    RowKernelConfig(8192, 1, 16, True),
)
# The chunked F3 and B1 of wide rows: columns per chunk, warps, and the register budget of a
# 16-warp block stated to ptxas: left to itself, ptxas 12.x keeps the fp32 F3 at 32 registers
# on sm_90 and spills (more blocks per SM); with the budget it takes 48, spill-free.
WIDE_BLOCK_N = 2048
WIDE_WARPS = 16
WIDE_OPTIONS = {"maxnreg": 128}
ROW_KERNEL_STAGES = 1
MAX_D = ROW_KERNEL_CONFIGS[-1].block_n
# B1 writes at most this many rows of partials (each program owns a contiguous row range).
MAX_PARTIALS = 256

# Each launch's arrival counters start at a multiple of 4 int32 (16 bytes) in the pass's counter
# buffer: every pointer a kernel gets is 16-byte aligned (the variant the AOT check compiles).
COUNTER_ALIGN = 4


def row_kernel_config(d: int) -> RowKernelConfig:
    for config in ROW_KERNEL_CONFIGS:
        if d <= config.block_n:
            return config
    raise ValueError(
        f"x: the Triton kernels hold a whole row in registers and take d <= {MAX_D}, got d={d}"
    )


def small_m_block(rows: int) -> int | None:
    """BLOCK_M of the split-K path for ``rows`` rows, or None when the tiled path serves them."""
    if rows > SMALL_M:
        return None
    return max(16, 1 << (rows - 1).bit_length())  # next power of 2 (not triton's: see cdiv)


def split_k(cols: int, K: int, cfg: SplitKConfig, target: int | None = None) -> SplitK:
    """Column block and K chunking so that ``blocks x splits >= target`` programs where K is
    long enough (chunks are whole BLOCK_K steps); the fewest splits that reach the target."""
    target = TARGET_PROGRAMS if target is None else target
    k_steps = cdiv(K, cfg.block_k)
    best = None
    for block_n in cfg.block_ns:
        blocks = cdiv(cols, block_n)
        wanted = min(cdiv(target, blocks), k_steps)
        # The longest chunk (fewest partials) that still gives `wanted` splits.
        chunk_steps = cdiv(k_steps, wanted)
        while chunk_steps > 1 and cdiv(k_steps, chunk_steps) < wanted:
            chunk_steps -= 1
        k_chunk = chunk_steps * cfg.block_k
        plan = SplitK(block_n, k_chunk, cdiv(K, k_chunk), blocks)
        if plan.blocks * plan.splits >= target:
            return plan
        if best is None or plan.blocks * plan.splits > best.blocks * best.splits:
            best = plan
    return best


def grad_split(rows: int, dw_tiles: int, cfg: MatmulConfig) -> tuple[int, int]:
    """(k_chunk, splits) of the M-row reduction of dW1/dW2 (many rows): enough splits that
    their ``dw_tiles`` tiles give TARGET_PROGRAMS programs, chunks of at least
    ``MIN_GRAD_CHUNK_STEPS`` BLOCK_K steps, each a whole number of steps."""
    steps = cdiv(rows, cfg.block_k)
    splits = max(1, min(cdiv(TARGET_PROGRAMS, dw_tiles), steps // MIN_GRAD_CHUNK_STEPS))
    k_chunk = cdiv(steps, splits) * cfg.block_k
    return k_chunk, cdiv(rows, k_chunk)


def splitk_config(dtype, grad: bool, shapes_hinted: bool) -> SplitKConfig:
    """The split-K config of the forward (F1, F2) or backward (``grad``: B2, B3) kernels."""
    if not shapes_hinted:
        return PLAIN_SPLITK_CONFIG
    return (SPLITK_GRAD_CONFIGS if grad else SPLITK_CONFIGS)[dtype]


def matmul_config(dtype, grad: bool, shapes_hinted: bool) -> MatmulConfig:
    """The tiled config of F1, F2, B2, or (``grad``) B3."""
    if not shapes_hinted:
        return PLAIN_MATMUL_CONFIG
    return (GRAD_MATMUL_CONFIGS if grad else ROW_MATMUL_CONFIGS)[dtype]


def _arrival_counters(device, *counts: int) -> tuple[torch.Tensor, list]:
    """(buffer, views): a fresh int32 buffer holding ``counts[i]`` arrival counters for the
    pass's i-th counting launch, each view starting 16-byte aligned (and running to the end:
    a launch reads only its own).

    Made for every call (this only allocates it) and zeroed by a launch ahead of the kernels
    that count (F0, a fill; in the backward B1, which runs anyway), in stream order: a result
    never depends on what earlier launches left (a CUDA graph captured without warm-up, graphs
    replayed in another order or on two streams, a launch that died), and no kernel resets a
    counter.
    """
    offsets = [0]
    for n in counts[:-1]:
        offsets.append(offsets[-1] + cdiv(n, COUNTER_ALIGN) * COUNTER_ALIGN)
    buf = torch.empty((offsets[-1] + counts[-1],), dtype=torch.int32, device=device)
    return buf, [buf[o:] if o else buf for o in offsets]


def _tiles(rows: int, cols: int, cfg: MatmulConfig) -> int:
    return cdiv(rows, cfg.block_m) * cdiv(cols, cfg.block_n)


def _matmul_launch(name, a, b, b_strides, c, bias, aux, K, epilogue, precision, shapes_hinted,
                   nbytes, flops):
    """``c = epilogue(a @ b)`` with a, c (and aux, when used) contiguous (rows, cols)."""
    cfg = matmul_config(a.dtype, False, shapes_hinted)
    rows, cols = c.shape
    return Launch(
        name, matmul_kernel.pick(shapes_hinted), (_tiles(rows, cols, cfg),),
        dict(a_ptr=a, b_ptr=b, c_ptr=c, bias_ptr=bias, aux_ptr=aux, M=rows, N=cols, K=K,
             stride_am=K, stride_ak=1, stride_bk=b_strides[0], stride_bn=b_strides[1],
             stride_cm=cols, stride_cn=1, stride_auxm=cols, stride_auxn=1),
        dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
             EPILOGUE=epilogue, PRECISION=precision),
        cfg.num_warps, cfg.num_stages, nbytes=nbytes, flops=flops, weight_reading=True,
    )


def _splitk_constexprs(block_m, plan: SplitK, cfg: SplitKConfig, precision) -> dict:
    return dict(BLOCK_M=block_m, BLOCK_N=plan.block_n, BLOCK_K=cfg.block_k, PRECISION=precision)


def forward_plan(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
    """(launches, (y, h, zb, mean, rstd)): the forward's launches and the tensors they write."""
    x, w1, b1, w2, b2, ln_weight, ln_bias = (
        aligned_contiguous(t) for t in (x, w1, b1, w2, b2, ln_weight, ln_bias))
    M, d = x.shape
    m = w1.shape[0]
    gemm_hinted, row_hinted = hinted(d, m), hinted(d)
    rows = row_kernel_config(d)
    precision = dot_precision(x.dtype)
    f32 = dict(device=x.device, dtype=torch.float32)
    h = torch.empty((M, m), device=x.device, dtype=x.dtype)
    zb = torch.empty_like(x)
    launches = []
    block_m = small_m_block(M)
    if block_m is not None:
        cfg = splitk_config(x.dtype, False, gemm_hinted)
        p1 = split_k(m, d, cfg)
        part1 = torch.empty((p1.splits, M, m), **f32)
        counters, (count1,) = _arrival_counters(x.device, p1.blocks)
        launches.append(zero_fill("F0 zero F1's arrival counters", counters))
        launches.append(Launch(
            f"F1 h=relu(x@w1.T+b1) split-K {p1.splits}", splitk_bias_relu_kernel.pick(gemm_hinted),
            (p1.blocks, p1.splits),
            dict(a_ptr=x, b_ptr=w1, bias_ptr=b1, c_ptr=h, part_ptr=part1,
                 count_ptr=count1, M=M, N=m, K=d, k_chunk=p1.k_chunk,
                 stride_bk=1, stride_bn=d),
            _splitk_constexprs(block_m, p1, cfg, precision), cfg.num_warps, cfg.num_stages,
            nbytes=tensor_bytes(x, w1, b1, h) + 2 * tensor_bytes(part1),
            workspace_bytes=2 * tensor_bytes(part1), flops=2 * M * d * m, weight_reading=True,
        ))
        p2 = split_k(d, m, cfg)
        part2 = torch.empty((p2.splits, M, d), **f32)
        launches.append(Launch(
            f"F2 h@w2.T split-K {p2.splits}", splitk_partials_kernel.pick(gemm_hinted),
            (p2.blocks, p2.splits),
            dict(a_ptr=h, b_ptr=w2, part_ptr=part2, M=M, N=d, K=m, k_chunk=p2.k_chunk,
                 stride_bk=1, stride_bn=m),
            _splitk_constexprs(block_m, p2, cfg, precision), cfg.num_warps, cfg.num_stages,
            nbytes=tensor_bytes(h, w2, part2), workspace_bytes=tensor_bytes(part2),
            flops=2 * M * d * m, weight_reading=True,
        ))
    else:
        part2 = zb[None]  # one "partial": zb itself, in x's dtype
        launches.append(_matmul_launch(
            "F1 h=relu(x@w1.T+b1)", x, w1, (1, d), h, b1, h, d, EPI_BIAS_RELU, precision,
            gemm_hinted, tensor_bytes(x, w1, b1, h), 2 * M * d * m))
        launches.append(_matmul_launch(
            "F2 zb=h@w2.T", h, w2, (1, m), zb, b2, zb, m, EPI_NONE, precision,
            gemm_hinted, tensor_bytes(h, w2, zb), 2 * M * d * m))

    y = torch.empty_like(x)
    store_zb = block_m is not None
    mean = torch.empty((M,), **f32)
    rstd = torch.empty((M,), **f32)
    f3_args = dict(part_ptr=part2, b2_ptr=b2, x_ptr=x, w_ptr=ln_weight, b_ptr=ln_bias, y_ptr=y,
                   zb_ptr=zb, mean_ptr=mean, rstd_ptr=rstd, M=M, N=d, S=part2.shape[0], eps=eps)
    f3_bytes = (tensor_bytes(part2, b2, x, ln_weight, ln_bias, y, mean, rstd)
                + (tensor_bytes(zb) if store_zb else 0))
    f3_workspace = tensor_bytes(part2) if store_zb else 0
    if rows.wide:  # three passes over the partials (and b2)
        launches.append(Launch(
            f"F3 zb(+partials)+b2, layer norm, +x (chunks of {WIDE_BLOCK_N})",
            layer_norm_forward_wide_kernel.pick(row_hinted), (M,), f3_args,
            dict(BLOCK_N=WIDE_BLOCK_N, STORE_ZB=store_zb), WIDE_WARPS, ROW_KERNEL_STAGES,
            nbytes=f3_bytes + 2 * tensor_bytes(part2, b2),
            workspace_bytes=3 * f3_workspace, options=WIDE_OPTIONS,
        ))
    else:
        launches.append(Launch(
            f"F3 zb(+partials)+b2, layer norm, +x ({rows.block_r}x{rows.block_n})",
            layer_norm_forward_kernel.pick(row_hinted), (cdiv(M, rows.block_r),), f3_args,
            dict(BLOCK_R=rows.block_r, BLOCK_N=rows.block_n, STORE_ZB=store_zb),
            rows.num_warps, ROW_KERNEL_STAGES, nbytes=f3_bytes, workspace_bytes=f3_workspace,
        ))
    return launches, (y, h, zb, mean, rstd)


def backward_plan(dy, x, w1, w2, b2, ln_weight, h, zb, mean, rstd):
    """(launches, (dx, dw1, db1, dw2, db2, dln_weight, dln_bias)) of the backward."""
    dy, x, w1, w2, b2, ln_weight, h, zb, mean, rstd = (
        aligned_contiguous(t) for t in (dy, x, w1, w2, b2, ln_weight, h, zb, mean, rstd))
    M, d = x.shape
    m = w1.shape[0]
    gemm_hinted, row_hinted = hinted(d, m), hinted(d)
    rows = row_kernel_config(d)
    precision = dot_precision(x.dtype)
    f32 = dict(device=x.device, dtype=torch.float32)
    block_m = small_m_block(M)
    partials = block_m is None  # many rows: B1 writes per-program LayerNorm partials
    if partials:
        grad_cfg = matmul_config(x.dtype, True, gemm_hinted)
        dw_tiles = _tiles(m, d, grad_cfg) + _tiles(d, m, grad_cfg)
        k_chunk, splits = grad_split(M, dw_tiles, grad_cfg)
        counters, (count,) = _arrival_counters(x.device, dw_tiles)
    else:
        cfg = splitk_config(x.dtype, True, gemm_hinted)
        p2, p3 = split_k(m, d, cfg), split_k(d, m, cfg)
        counters, (count2, count3) = _arrival_counters(x.device, p2.blocks, p3.blocks)

    # B1, which also zeroes the arrival counters of B2 and B3. Prompt-sized inputs: one row
    # block per program, no partials (B3 sums the few rows itself); many rows: per-program fp32
    # partials of dln_weight, dln_bias and db2.
    block_r = 1 if rows.wide else rows.block_r
    rows_per_program = block_r
    if partials:
        rows_per_program = cdiv(cdiv(M, MAX_PARTIALS), block_r) * block_r
    n_programs = cdiv(M, rows_per_program)
    dz = torch.empty_like(x)
    ln_parts = [torch.empty((n_programs if partials else 0, d), **f32) for _ in range(3)]
    ln_args = dict(dy_ptr=dy, zb_ptr=zb, b2_ptr=b2, w_ptr=ln_weight, mean_ptr=mean,
                   rstd_ptr=rstd, dz_ptr=dz, part_w_ptr=ln_parts[0], part_b_ptr=ln_parts[1],
                   part_dz_ptr=ln_parts[2], count_ptr=counters, M=M, N=d,
                   rows_per_program=rows_per_program, n_counters=counters.numel())
    ln_bytes = tensor_bytes(dy, zb, b2, ln_weight, mean, rstd, dz, *ln_parts, counters)
    b1_grid = (max(n_programs, 1),)  # no rows: one program still zeroes the counters
    if rows.wide:
        launches = [Launch(
            f"B1 layer norm backward (chunks of {WIDE_BLOCK_N})",
            layer_norm_backward_wide_kernel.pick(row_hinted), b1_grid, ln_args,
            dict(BLOCK_N=WIDE_BLOCK_N, PARTIALS=partials), WIDE_WARPS,
            ROW_KERNEL_STAGES, nbytes=ln_bytes, workspace_bytes=tensor_bytes(*ln_parts),
            options=WIDE_OPTIONS)]
    else:
        launches = [Launch(
            f"B1 layer norm backward ({rows.block_r}x{rows.block_n})",
            layer_norm_backward_kernel.pick(row_hinted), b1_grid, ln_args,
            dict(BLOCK_R=rows.block_r, BLOCK_N=rows.block_n, PARTIALS=partials),
            rows.num_warps, ROW_KERNEL_STAGES,
            nbytes=ln_bytes, workspace_bytes=tensor_bytes(*ln_parts))]

    da = torch.empty_like(h)
    dx = torch.empty_like(x)
    dw1 = torch.empty((m, d), device=x.device, dtype=x.dtype)
    db1 = torch.empty((m,), device=x.device, dtype=x.dtype)
    dw2 = torch.empty((d, m), device=x.device, dtype=x.dtype)
    db2 = torch.empty((d,), device=x.device, dtype=x.dtype)
    dln_weight = torch.empty((d,), device=x.device, dtype=x.dtype)
    dln_bias = torch.empty((d,), device=x.device, dtype=x.dtype)
    grads = (dx, dw1, db1, dw2, db2, dln_weight, dln_bias)
    ln_sums_bytes = tensor_bytes(*ln_parts, db2, dln_weight, dln_bias)

    if not partials:
        part_a = torch.empty((p2.splits, M, m), **f32)
        launches.append(Launch(
            f"B2 da=dz@w2 (0 where h<=0), db1, dw2=dz.T@h split-K {p2.splits}",
            da_dw2_kernel.pick(gemm_hinted),
            (p2.blocks, p2.splits),
            dict(dz_ptr=dz, w2_ptr=w2, h_ptr=h, da_ptr=da, db1_ptr=db1, dw2_ptr=dw2,
                 part_ptr=part_a, count_ptr=count2, M=M, D=d, HID=m, k_chunk=p2.k_chunk),
            _splitk_constexprs(block_m, p2, cfg, precision), cfg.num_warps, cfg.num_stages,
            nbytes=tensor_bytes(dz, w2, h, da, db1, dw2) + 2 * tensor_bytes(part_a),
            workspace_bytes=2 * tensor_bytes(part_a), flops=4 * M * d * m, weight_reading=True,
        ))
        part_x = torch.empty((p3.splits, M, d), **f32)
        launches.append(Launch(
            f"B3 dx=da@w1+dy, dw1=da.T@x split-K {p3.splits}, LN sums",
            dx_dw1_kernel.pick(gemm_hinted),
            (p3.blocks, p3.splits + 1),
            dict(da_ptr=da, w1_ptr=w1, x_ptr=x, dy_ptr=dy, dx_ptr=dx, dw1_ptr=dw1,
                 part_ptr=part_x, count_ptr=count3, zb_ptr=zb, b2_ptr=b2,
                 dz_ptr=dz, mean_ptr=mean, rstd_ptr=rstd, dlnw_ptr=dln_weight, dlnb_ptr=dln_bias,
                 db2_ptr=db2, M=M, D=d, HID=m, k_chunk=p3.k_chunk),
            _splitk_constexprs(block_m, p3, cfg, precision), cfg.num_warps, cfg.num_stages,
            nbytes=(tensor_bytes(da, w1, x, dy, dx, dw1, zb, dz, mean, rstd) + ln_sums_bytes
                    + 2 * tensor_bytes(part_x)),
            workspace_bytes=2 * tensor_bytes(part_x),
            flops=4 * M * d * m, weight_reading=True,
        ))
        return launches, grads

    launches.append(_matmul_launch(
        "B2 da=dz@w2 (0 where h<=0)", dz, w2, (m, 1), da, da, h, d, EPI_RELU_MASK, precision,
        gemm_hinted, tensor_bytes(dz, w2, h, da), 2 * M * d * m))
    part_dw1 = torch.empty((splits, m, d), **f32)
    part_db1 = torch.empty((splits, m), **f32)
    part_dw2 = torch.empty((splits, d, m), **f32)
    b3_programs = cdiv(d, REDUCE_BLOCK_C) + dw_tiles * splits + _tiles(M, d, grad_cfg)
    launches.append(Launch(
        "B3 dw1=da.T@x (+db1), dw2=dz.T@h, dx=da@w1+dy, LN sums",
        backward_grads_kernel.pick(gemm_hinted),
        (b3_programs,),
        dict(da_ptr=da, dz_ptr=dz, x_ptr=x, h_ptr=h, w1_ptr=w1, dy_ptr=dy, dw1_ptr=dw1,
             db1_ptr=db1, dw2_ptr=dw2, db2_ptr=db2, dx_ptr=dx, part_w_ptr=ln_parts[0],
             part_b_ptr=ln_parts[1], part_dz_ptr=ln_parts[2], dlnw_ptr=dln_weight,
             dlnb_ptr=dln_bias, part_dw1_ptr=part_dw1, part_db1_ptr=part_db1,
             part_dw2_ptr=part_dw2, count_ptr=count, M=M, D=d, HID=m,
             P=n_programs, k_chunk=k_chunk, splits=splits, stride_w1h=d, stride_w1d=1),
        dict(BLOCK_M=grad_cfg.block_m, BLOCK_N=grad_cfg.block_n, BLOCK_K=grad_cfg.block_k,
             GROUP_M=grad_cfg.group_m, BLOCK_P=REDUCE_BLOCK_P, BLOCK_C=REDUCE_BLOCK_C,
             PRECISION=precision),
        grad_cfg.num_warps, grad_cfg.num_stages,
        nbytes=(tensor_bytes(da, dz, x, h, w1, dy, dw1, db1, dw2, dx) + ln_sums_bytes
                + 2 * tensor_bytes(part_dw1, part_db1, part_dw2)),
        workspace_bytes=tensor_bytes(*ln_parts) + 2 * tensor_bytes(part_dw1, part_db1, part_dw2),
        flops=6 * M * d * m, weight_reading=True,
    ))
    return launches, grads


def residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
    """Returns (y, h, zb, mean, rstd); ``zb = h W2^T`` (x's dtype) is what the backward keeps
    of z (z = zb + b2); see ``rpt_fast.ops`` for the contract."""
    launches, outputs = forward_plan(x, w1, b1, w2, b2, ln_weight, ln_bias, eps)
    for launch in launches:
        launch()
    return outputs


def residual_mlp_backward(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd):
    """Returns (dx, dw1, db1, dw2, db2, dln_weight, dln_bias) in x's dtype, contiguous;
    ``z`` is the forward's zb."""
    launches, grads = backward_plan(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd)
    for launch in launches:
        launch()
    return grads


# Shapes (M, d, m) whose launch plans the AOT check compiles. Row counts are never specialised.
# d and m multiples of 16 (the ``hinted`` kernels): the cost model's headline shapes, split-K at
# every BLOCK_M (16, 32, 64, 128; BLOCK_N 16 and 32 at 128), every row-kernel config on both
# paths. Any other d or m (the ``plain`` kernels: their integers are not specialised, so every
# such shape compiles the same code per config): split-K at the smallest and the largest
# BLOCK_M (16, 128: the tiles between hold fewer registers than 128), BLOCK_N 16 and 32, every
# row-kernel config on both paths.
AOT_SHAPES = (
    (100, 2048, 800), (100, 4096, 800), (10, 768, 400), (16384, 1024, 256), (20, 256, 128),
    (50, 8192, 400), (128, 64, 48), (256, 256, 128), (256, 4096, 256), (256, 8192, 256),
    (100, 1000, 792), (100, 72, 40), (10, 200, 392), (100, 3000, 100), (10, 5000, 392),
    (1000, 1000, 392), (300, 200, 100), (300, 3000, 100), (300, 5000, 100),
)


def meta_inputs(M: int, d: int, m: int, dtype: torch.dtype) -> list:
    """Contiguous (x, w1, b1, w2, b2, ln_weight, ln_bias) on the meta device: plans, no data."""
    shapes = ((M, d), (m, d), (m,), (d, m), (d,), (d,), (d,))
    return [torch.empty(s, device="meta", dtype=dtype) for s in shapes]


def plans(M: int, d: int, m: int, dtype: torch.dtype) -> tuple[list, list]:
    """(forward launches, backward launches) for a (M, d, m) problem, built on meta tensors."""
    x, w1, b1, w2, b2, ln_weight, ln_bias = meta_inputs(M, d, m, dtype)
    forward, (y, h, zb, mean, rstd) = forward_plan(x, w1, b1, w2, b2, ln_weight, ln_bias, 1e-5)
    backward, _ = backward_plan(torch.empty_like(x), x, w1, w2, b2, ln_weight, h, zb, mean, rstd)
    return forward, backward


def aot_specs(dtype: torch.dtype) -> list:
    """Every kernel variant the launchers run for ``dtype`` at ``AOT_SHAPES`` (fp32: with tf32
    on and off), specialised as Triton's launcher does (see ``rpt_fast.ops.aot``)."""
    from .aot import spec_from_launch

    precisions = ("ieee", "tf32") if dtype == torch.float32 else ("tf32",)
    specs, seen = [], set()
    for M, d, m in AOT_SHAPES:
        forward, backward = plans(M, d, m, dtype)
        for launch in forward + backward:
            if isinstance(launch, ZeroFill):  # torch's fill kernel, not Triton's
                continue
            base = spec_from_launch(launch, f"{launch.name} [{M}x{d}x{m}] {launch.kernel.variant}")
            for precision in precisions if "PRECISION" in base.constexprs else (None,):
                constexprs = dict(base.constexprs)
                if precision is not None:
                    constexprs["PRECISION"] = precision
                spec = base._replace(constexprs=constexprs,
                                     name=base.name + (f" {precision}" if precision else ""))
                key = (spec.kernel.__name__, tuple(sorted(constexprs.items())),
                       tuple(spec.signature.items()), spec.divisible, spec.num_warps,
                       spec.num_stages, tuple(spec.options.items()))
                if key not in seen:
                    seen.add(key)
                    specs.append(spec)
    return specs
