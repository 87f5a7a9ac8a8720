"""Launchers of the shared residual encoder's Triton kernels, and their fixed config tables.

Forward, 3 launches: F1 ``h = relu(x W1^T + b1)``; F2 ``z = h W2^T + b2`` into fp32 scratch;
F3 LayerNorm + affine + residual (writes y, mean, rstd).
Backward, 4 launches: B1 recompute z (F2's kernel); B2 LayerNorm backward (dz and fp32
partials of dln_weight/dln_bias); B3 ``da = (dz W2) * (h > 0)``; B4 one grouped launch for
dW1 + db1, dW2 + db2, dx = da W1 + dy and the fixed-order sum of the partials.

Configs are chosen in Python from shapes only (no autotuning, no host-device sync), from the
tables below, which ``aot_specs`` enumerates for ahead-of-time compile checks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton

from .precision import dot_precision
from .triton_layer_norm import (
    layer_norm_backward_kernel,
    layer_norm_backward_wide_kernel,
    layer_norm_forward_kernel,
)
from .triton_matmul import (
    EPI_BIAS,
    EPI_BIAS_RELU,
    EPI_RELU_MASK,
    backward_grads_kernel,
    matmul_kernel,
)


class RowKernelConfig(NamedTuple):
    block_n: int  # holds a whole row: d <= block_n
    block_r: int  # rows per step
    num_warps: int
    wide_backward: bool  # B2 walks rows in column chunks (rows too wide for its registers)


class MatmulConfig(NamedTuple):
    block_m: int
    block_n: int
    block_k: int
    group_m: int
    num_warps: int
    num_stages: int


# M buckets: prompt-sized inputs (up to 32 rows, up to 128 rows), where reading the weights
# dominates, and LARGE_M for everything bigger (thousands of rows).
SMALL_M_BUCKETS = (32, 128)
LARGE_M = 256

# F1, F2, B1, B3: problems with M output rows. Every entry is checked spill-free for
# sm_80/sm_90 in all dtypes by ``python -m rpt_fast.ops.aot``.
ROW_MATMUL_CONFIGS = {
    32: MatmulConfig(32, 64, 32, 8, 4, 3),
    128: MatmulConfig(64, 128, 32, 8, 8, 3),
    LARGE_M: MatmulConfig(128, 64, 32, 8, 8, 3),  # 128x128 spills in fp32 on sm_90
}
# B4: dW1 and dW2 reduce over the M rows (K = M); dx has M output rows.
GRAD_MATMUL_CONFIGS = {
    32: MatmulConfig(64, 64, 32, 8, 4, 3),
    128: MatmulConfig(64, 128, 32, 8, 8, 3),
    LARGE_M: MatmulConfig(64, 128, 32, 8, 8, 3),  # 128x128 spills in fp32 on sm_80
}
# The partials' column sums inside B4: BLOCK_P rows x BLOCK_C columns per step.
REDUCE_BLOCK_P = 16
REDUCE_BLOCK_C = 128
# Row kernels (F3, B2): the first config whose block_n holds a whole row.
ROW_KERNEL_CONFIGS = (
    RowKernelConfig(256, 8, 4, False),
    RowKernelConfig(1024, 2, 4, False),
    RowKernelConfig(4096, 1, 16, False),
    RowKernelConfig(8192, 1, 16, True),
)
# The chunked B2 for wide rows: columns per chunk, warps.
WIDE_BACKWARD_BLOCK_N = 2048
WIDE_BACKWARD_WARPS = 8
ROW_KERNEL_STAGES = 1
MAX_D = ROW_KERNEL_CONFIGS[-1].block_n
# B2 writes at most this many rows of partials (each program owns a contiguous row range).
MAX_PARTIALS = 256


def m_bucket(rows: int) -> int:
    """The config key for ``rows`` rows: the first SMALL_M_BUCKETS entry >= rows, or LARGE_M."""
    for bucket in SMALL_M_BUCKETS:
        if rows <= bucket:
            return bucket
    return LARGE_M


def row_kernel_config(d: int) -> RowKernelConfig:
    for config in ROW_KERNEL_CONFIGS:
        if d <= config.block_n:
            return config
    raise ValueError(
        f"x: the Triton kernels hold a whole row in registers and take d <= {MAX_D}, got d={d}"
    )


def _shape(cfg: MatmulConfig) -> str:
    return f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k} w{cfg.num_warps} s{cfg.num_stages}"


def _tiles(rows: int, cols: int, cfg: MatmulConfig) -> int:
    return triton.cdiv(rows, cfg.block_m) * triton.cdiv(cols, cfg.block_n)


def _matmul(a, a_strides, b, b_strides, c, bias, aux, K, epilogue, cfg, precision):
    """Launches ``c = epilogue(a @ b)`` with c (and aux, when used) contiguous (rows, cols)."""
    rows, cols = c.shape
    matmul_kernel[(_tiles(rows, cols, cfg),)](
        a, b, c, bias, aux,
        rows, cols, K,
        *a_strides, *b_strides, cols, 1, cols, 1,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        EPILOGUE=epilogue, PRECISION=precision,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def _up_projection(h, w2, b2, cfg, precision):
    """z = h W2^T + b2 in fp32 (F2 and B1)."""
    M, m = h.shape
    z = torch.empty((M, w2.shape[0]), device=h.device, dtype=torch.float32)
    _matmul(h, (m, 1), w2, (w2.stride(1), w2.stride(0)), z, b2, z, m, EPI_BIAS, cfg, precision)
    return z


def residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
    """Returns (y, h, z, mean, rstd) with z empty: the backward recomputes it (only h and the
    fp32 statistics are saved); see ``rpt_fast.ops`` for the contract."""
    M, d = x.shape
    m = w1.shape[0]
    rows = row_kernel_config(d)
    cfg = ROW_MATMUL_CONFIGS[m_bucket(M)]
    precision = dot_precision(x.dtype)

    h = torch.empty((M, m), device=x.device, dtype=x.dtype)
    _matmul(x, (d, 1), w1, (w1.stride(1), w1.stride(0)), h, b1, h, d, EPI_BIAS_RELU, cfg, precision)
    z = _up_projection(h, w2, b2, cfg, precision)

    y = torch.empty_like(x)
    mean = torch.empty((M,), device=x.device, dtype=torch.float32)
    rstd = torch.empty((M,), device=x.device, dtype=torch.float32)
    layer_norm_forward_kernel[(triton.cdiv(M, rows.block_r),)](
        z, x, ln_weight, ln_bias, y, mean, rstd, M, d, eps,
        BLOCK_R=rows.block_r, BLOCK_N=rows.block_n,
        num_warps=rows.num_warps, num_stages=ROW_KERNEL_STAGES,
    )
    return y, h, x.new_empty((0,)), mean, rstd


def residual_mlp_backward(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd):
    """Returns (dx, dw1, db1, dw2, db2, dln_weight, dln_bias) in x's dtype, contiguous.
    ``z`` is the forward's empty one: z is recomputed from h (B1)."""
    M, d = x.shape
    m = w1.shape[0]
    rows = row_kernel_config(d)
    bucket = m_bucket(M)
    cfg = ROW_MATMUL_CONFIGS[bucket]
    precision = dot_precision(x.dtype)

    z = _up_projection(h, w2, b2, cfg, precision)

    rows_per_program = triton.cdiv(triton.cdiv(M, MAX_PARTIALS), rows.block_r) * rows.block_r
    n_partials = triton.cdiv(M, rows_per_program)
    dz = torch.empty_like(x)
    part_w = torch.empty((n_partials, d), device=x.device, dtype=torch.float32)
    part_b = torch.empty((n_partials, d), device=x.device, dtype=torch.float32)
    if rows.wide_backward:
        layer_norm_backward_wide_kernel[(n_partials,)](
            dy, z, ln_weight, mean, rstd, dz, part_w, part_b, M, d, rows_per_program,
            BLOCK_N=WIDE_BACKWARD_BLOCK_N, num_warps=WIDE_BACKWARD_WARPS,
            num_stages=ROW_KERNEL_STAGES,
        )
    else:
        layer_norm_backward_kernel[(n_partials,)](
            dy, z, ln_weight, mean, rstd, dz, part_w, part_b, M, d, rows_per_program,
            BLOCK_R=rows.block_r, BLOCK_N=rows.block_n,
            num_warps=rows.num_warps, num_stages=ROW_KERNEL_STAGES,
        )

    da = torch.empty_like(h)
    w2_strides = (w2.stride(0), w2.stride(1))
    _matmul(dz, (d, 1), w2, w2_strides, da, da, h, d, EPI_RELU_MASK, cfg, precision)

    grads = GRAD_MATMUL_CONFIGS[bucket]
    dx = torch.empty_like(x)
    dw1 = torch.empty((m, d), device=x.device, dtype=x.dtype)
    db1 = torch.empty((m,), device=x.device, dtype=x.dtype)
    dw2 = torch.empty((d, m), device=x.device, dtype=x.dtype)
    db2 = torch.empty((d,), device=x.device, dtype=x.dtype)
    dln_weight = torch.empty((d,), device=x.device, dtype=x.dtype)
    dln_bias = torch.empty((d,), device=x.device, dtype=x.dtype)
    n_programs = (
        triton.cdiv(d, REDUCE_BLOCK_C)
        + _tiles(m, d, grads)
        + _tiles(d, m, grads)
        + _tiles(M, d, grads)
    )
    backward_grads_kernel[(n_programs,)](
        da, dz, x, h, w1, dy,
        dw1, db1, dw2, db2, dx,
        part_w, part_b, dln_weight, dln_bias,
        M, d, m, n_partials,
        w1.stride(0), w1.stride(1),
        BLOCK_M=grads.block_m, BLOCK_N=grads.block_n, BLOCK_K=grads.block_k,
        GROUP_M=grads.group_m, BLOCK_P=REDUCE_BLOCK_P, BLOCK_C=REDUCE_BLOCK_C,
        PRECISION=precision, num_warps=grads.num_warps, num_stages=grads.num_stages,
    )
    return dx, dw1, db1, dw2, db2, dln_weight, dln_bias


def aot_specs(dtype: torch.dtype) -> list:
    """Every kernel config the launchers above can pick for ``dtype`` (see ``rpt_fast.ops.aot``),
    compiled for contiguous weights (unit strides specialised, as Triton's launcher does)."""
    from .aot import KernelSpec, make_signature, triton_type

    t = "*" + triton_type(dtype)
    precisions = ("ieee", "tf32") if dtype == torch.float32 else ("tf32",)
    # F1: h = relu(x W1^T + b1); F2/B1: z (fp32) = h W2^T + b2; B3: da = (dz W2) * (h > 0).
    row_problems = {
        "F1 x@w1.T+b1,relu": (EPI_BIAS_RELU, t, {"stride_ak": 1, "stride_bk": 1}),
        "F2/B1 h@w2.T+b2": (EPI_BIAS, "*fp32", {"stride_ak": 1, "stride_bk": 1}),
        "B3 (dz@w2)*(h>0)": (EPI_RELU_MASK, t, {"stride_ak": 1, "stride_bn": 1}),
    }
    unit_outputs = {"stride_cn": 1, "stride_auxn": 1}
    specs, seen = [], set()

    def add(name, kernel, pointers, constexprs, num_warps, num_stages, scalars=None):
        key = (kernel.__name__, tuple(sorted(constexprs.items())), num_warps, num_stages)
        if key not in seen:
            seen.add(key)
            signature = make_signature(kernel, pointers, constexprs, scalars)
            specs.append(KernelSpec(name, kernel, signature, constexprs, num_warps, num_stages))

    for bucket in (*SMALL_M_BUCKETS, LARGE_M):
        for precision in precisions:
            cfg = ROW_MATMUL_CONFIGS[bucket]
            blocks = {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "BLOCK_K": cfg.block_k,
                      "GROUP_M": cfg.group_m, "PRECISION": precision}
            for label, (epilogue, c_type, units) in row_problems.items():
                aux = c_type if epilogue == EPI_BIAS else t
                pointers = {"a_ptr": t, "b_ptr": t, "c_ptr": c_type, "bias_ptr": t, "aux_ptr": aux}
                constexprs = {**blocks, **units, **unit_outputs, "EPILOGUE": epilogue}
                add(f"{label} {_shape(cfg)} {precision}", matmul_kernel, pointers, constexprs,
                    cfg.num_warps, cfg.num_stages)
            grads = GRAD_MATMUL_CONFIGS[bucket]
            pointers = {n: t for n in backward_grads_kernel.arg_names if n.endswith("_ptr")}
            pointers.update(part_w_ptr="*fp32", part_b_ptr="*fp32")
            constexprs = {
                "BLOCK_M": grads.block_m, "BLOCK_N": grads.block_n, "BLOCK_K": grads.block_k,
                "GROUP_M": grads.group_m, "BLOCK_P": REDUCE_BLOCK_P, "BLOCK_C": REDUCE_BLOCK_C,
                "PRECISION": precision, "stride_w1d": 1,
            }
            add(f"B4 grads {_shape(grads)} {precision}", backward_grads_kernel, pointers,
                constexprs, grads.num_warps, grads.num_stages)
    for rows in ROW_KERNEL_CONFIGS:
        blocks = {"BLOCK_N": rows.block_n, "BLOCK_R": rows.block_r}
        shape, warps = f"{rows.block_r}x{rows.block_n} w{rows.num_warps}", rows.num_warps
        pointers = {"z_ptr": "*fp32", "x_ptr": t, "w_ptr": t, "b_ptr": t, "y_ptr": t,
                    "mean_ptr": "*fp32", "rstd_ptr": "*fp32"}
        add(f"F3 layer norm {shape}", layer_norm_forward_kernel, pointers, blocks, warps,
            ROW_KERNEL_STAGES,
            scalars={"eps": "fp32"})
        pointers = {"dy_ptr": t, "z_ptr": "*fp32", "w_ptr": t, "mean_ptr": "*fp32",
                    "rstd_ptr": "*fp32", "dz_ptr": t, "part_w_ptr": "*fp32", "part_b_ptr": "*fp32"}
        if rows.wide_backward:
            add(f"B2 layer norm backward, chunks of {WIDE_BACKWARD_BLOCK_N} w{WIDE_BACKWARD_WARPS}",
                layer_norm_backward_wide_kernel, pointers, {"BLOCK_N": WIDE_BACKWARD_BLOCK_N},
                WIDE_BACKWARD_WARPS, ROW_KERNEL_STAGES)
        else:
            add(f"B2 layer norm backward {shape}", layer_norm_backward_kernel, pointers, blocks,
                warps, ROW_KERNEL_STAGES)
    return specs
