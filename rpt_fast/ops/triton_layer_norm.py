"""Row kernels of the residual encoder: LayerNorm + affine + residual forward, and its backward.

Both hold whole rows (BLOCK_N >= d columns, BLOCK_R rows at a time) in registers and compute
the statistics in fp32, as flash-attention's fused layer norm does; their ``_wide`` forms walk
rows too wide for registers in column chunks. The forward sums the S fp32
split-K partials of ``h W2^T`` in a fixed order (or reads ``zb = h W2^T`` a GEMM wrote), adds
b2, and saves zb (x's dtype) for the backward, which rebuilds ``z = zb + b2`` in fp32 instead of recomputing the GEMM. The
backward writes the gradients of ln_weight, ln_bias and b2 as per-program fp32 partials (each
program owns a fixed range of rows), which a later fixed-order column sum reduces:
deterministic, no atomics. Its program 0 also zeroes the arrival counters of the launches after
it (the backward's split reductions), so they need no launch of their own.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .specialise import jit_variants


@jit_variants(counts=("M", "S"), shapes=("N",))
def layer_norm_forward_kernel(
    part_ptr, b2_ptr, x_ptr, w_ptr, b_ptr, y_ptr, zb_ptr, mean_ptr, rstd_ptr,
    M, N, S, eps,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, STORE_ZB: tl.constexpr,
):
    """Rows ``[pid * BLOCK_R, ...)``: ``zb = sum_s part[s]``, ``z = zb + b2``,
    ``y = (z - mean) * rstd * w + b + x``.

    part is (S, M, N) fp32, or zb itself (S = 1, x's dtype, ``STORE_ZB`` off: many rows, where
    one GEMM wrote it); x, y and zb are contiguous (M, N); mean and rstd are fp32 (M,).
    """
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_N)
    r_ok = rows < M
    c_ok = cols < N
    ok = r_ok[:, None] & c_ok[None, :]
    offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
    zb = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)
    part = part_ptr + tl.program_id(0).to(tl.int64) * BLOCK_R * N
    part_offs = tl.arange(0, BLOCK_R)[:, None] * N + cols[None, :]
    for _ in range(0, S):
        zb += tl.load(part + part_offs, mask=ok, other=0.0).to(tl.float32)
        part += M * N
    if STORE_ZB:
        tl.store(zb_ptr + offs, zb.to(zb_ptr.dtype.element_ty), mask=ok)
    z = zb + tl.load(b2_ptr + cols[None, :], mask=c_ok[None, :], other=0.0).to(tl.float32)
    mean = tl.sum(z, axis=1) / N
    centered = tl.where(c_ok[None, :], z - mean[:, None], 0.0)
    var = tl.sum(centered * centered, axis=1) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols[None, :], mask=c_ok[None, :], other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols[None, :], mask=c_ok[None, :], other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    y = centered * rstd[:, None] * w + b + x
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(mean_ptr + rows, mean, mask=r_ok)
    tl.store(rstd_ptr + rows, rstd, mask=r_ok)


@triton.jit
def _zero_counters(count_ptr, n_counters, BLOCK_N: tl.constexpr):
    """Program 0 zeroes the ``n_counters`` int32 arrival counters at ``count_ptr``."""
    if tl.program_id(0) == 0:
        cols = tl.arange(0, BLOCK_N)
        for c0 in range(0, n_counters, BLOCK_N):
            tl.store(count_ptr + c0 + cols, tl.zeros((BLOCK_N,), dtype=tl.int32),
                     mask=c0 + cols < n_counters)


@triton.jit
def _chunk_z(part_ptr, b2_ptr, offset, c0, cols, c_ok, M, N, S):
    """(zb, z) of columns ``c0 + cols`` of the row at ``offset``: the S partials summed in
    order (fp32), and z = zb + b2."""
    zb = tl.zeros(cols.shape, dtype=tl.float32)
    part = part_ptr + offset + c0
    for _ in range(0, S):
        zb += tl.load(part + cols, mask=c_ok, other=0.0).to(tl.float32)
        part += M * N
    return zb, zb + tl.load(b2_ptr + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)


@jit_variants(counts=("M", "S"), shapes=("N",))
def layer_norm_forward_wide_kernel(
    part_ptr, b2_ptr, x_ptr, w_ptr, b_ptr, y_ptr, zb_ptr, mean_ptr, rstd_ptr,
    M, N, S, eps,
    BLOCK_N: tl.constexpr, STORE_ZB: tl.constexpr,
):
    """:func:`layer_norm_forward_kernel` for rows too wide for registers, one row per program
    in BLOCK_N-column chunks and three passes, as Triton's layer-norm tutorial: the mean, the
    variance about it, then y. Each pass sums the row's fp32 partials again (from L2), so z is
    the same fp32 value in all three and zb is rounded only where it is stored."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    offset = row.to(tl.int64) * N
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for c0 in range(0, N, BLOCK_N):
        c_ok = c0 + cols < N
        zb, z = _chunk_z(part_ptr, b2_ptr, offset, c0, cols, c_ok, M, N, S)
        if STORE_ZB:
            tl.store(zb_ptr + offset + c0 + cols, zb.to(zb_ptr.dtype.element_ty), mask=c_ok)
        acc += tl.where(c_ok, z, 0.0)
    mean = tl.sum(acc, axis=0) / N
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for c0 in range(0, N, BLOCK_N):
        c_ok = c0 + cols < N
        _, z = _chunk_z(part_ptr, b2_ptr, offset, c0, cols, c_ok, M, N, S)
        centered = tl.where(c_ok, z - mean, 0.0)
        acc += centered * centered
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / N + eps)
    for c0 in range(0, N, BLOCK_N):
        c_ok = c0 + cols < N
        _, z = _chunk_z(part_ptr, b2_ptr, offset, c0, cols, c_ok, M, N, S)
        w = tl.load(w_ptr + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offset + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
        y = (z - mean) * rstd * w + b + x
        tl.store(y_ptr + offset + c0 + cols, y.to(y_ptr.dtype.element_ty), mask=c_ok)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@jit_variants(counts=("M", "rows_per_program", "n_counters"), shapes=("N",))
def layer_norm_backward_kernel(
    dy_ptr, zb_ptr, b2_ptr, w_ptr, mean_ptr, rstd_ptr, dz_ptr, part_w_ptr, part_b_ptr, part_dz_ptr,
    count_ptr, M, N, rows_per_program, n_counters,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, PARTIALS: tl.constexpr,
):
    """Program ``p`` handles rows ``[p * rows_per_program, ...)`` (a multiple of BLOCK_R):
    writes dz (dz's dtype) and row ``p`` of the fp32 partials ``part_w = sum dy * zhat``,
    ``part_b = sum dy`` and ``part_dz = sum dz`` (for db2); without ``PARTIALS`` only dz (a
    later kernel sums the few rows of a prompt itself). Program 0 zeroes the ``n_counters``
    int32 arrival counters at ``count_ptr`` (the grid has at least one program).

    dy, zb and dz are contiguous (M, N), z = zb + b2; part_* are (P, N) fp32.
    """
    _zero_counters(count_ptr, n_counters, BLOCK_N)
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    c_ok = cols < N
    w = tl.load(w_ptr + cols[None, :], mask=c_ok[None, :], other=0.0).to(tl.float32)
    b2 = tl.load(b2_ptr + cols[None, :], mask=c_ok[None, :], other=0.0).to(tl.float32)
    acc_w = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)
    acc_dz = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)
    first = pid * rows_per_program
    last = min(first + rows_per_program, M)
    for r0 in range(first, last, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        r_ok = rows < last
        ok = r_ok[:, None] & c_ok[None, :]
        offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
        z = tl.load(zb_ptr + offs, mask=ok, other=0.0).to(tl.float32) + b2
        dy = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=r_ok, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=r_ok, other=0.0)
        zhat = tl.where(ok, (z - mean[:, None]) * rstd[:, None], 0.0)
        g = dy * w
        c1 = tl.sum(zhat * g, axis=1) / N
        c2 = tl.sum(g, axis=1) / N
        dz = (g - (zhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=ok)
        if PARTIALS:
            acc_w += dy * zhat
            acc_b += dy
            acc_dz += tl.where(ok, dz, 0.0)
    if PARTIALS:
        tl.store(part_w_ptr + pid * N + cols, tl.sum(acc_w, axis=0), mask=c_ok)
        tl.store(part_b_ptr + pid * N + cols, tl.sum(acc_b, axis=0), mask=c_ok)
        tl.store(part_dz_ptr + pid * N + cols, tl.sum(acc_dz, axis=0), mask=c_ok)


@jit_variants(counts=("M", "rows_per_program", "n_counters"), shapes=("N",))
def layer_norm_backward_wide_kernel(
    dy_ptr, zb_ptr, b2_ptr, w_ptr, mean_ptr, rstd_ptr, dz_ptr, part_w_ptr, part_b_ptr, part_dz_ptr,
    count_ptr, M, N, rows_per_program, n_counters,
    BLOCK_N: tl.constexpr, PARTIALS: tl.constexpr,
):
    """:func:`layer_norm_backward_kernel` for rows too wide for registers: each row is walked
    in BLOCK_N-column chunks twice (the two row sums, then dz), and the program accumulates
    its partials in its own rows of part_* (no other program touches them). A thread that
    reads back an element of them need not be the one that stored it (the layout follows the
    dtype), so a CTA barrier orders each row's stores before the next row's loads."""
    _zero_counters(count_ptr, n_counters, BLOCK_N)
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    part_w_row = part_w_ptr + pid.to(tl.int64) * N
    part_b_row = part_b_ptr + pid.to(tl.int64) * N
    part_dz_row = part_dz_ptr + pid.to(tl.int64) * N
    if PARTIALS:
        for c0 in range(0, N, BLOCK_N):
            c_ok = c0 + cols < N
            tl.store(part_w_row + c0 + cols, tl.zeros((BLOCK_N,), dtype=tl.float32), mask=c_ok)
            tl.store(part_b_row + c0 + cols, tl.zeros((BLOCK_N,), dtype=tl.float32), mask=c_ok)
            tl.store(part_dz_row + c0 + cols, tl.zeros((BLOCK_N,), dtype=tl.float32), mask=c_ok)
        tl.debug_barrier()
    first = pid * rows_per_program
    last = min(first + rows_per_program, M)
    offset = first.to(tl.int64) * N  # of row r, advanced one row per step
    for r in range(first, last):
        mean = tl.load(mean_ptr + r)
        rstd = tl.load(rstd_ptr + r)
        sum_zg = tl.zeros((BLOCK_N,), dtype=tl.float32)
        sum_g = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for c0 in range(0, N, BLOCK_N):
            c_ok = c0 + cols < N
            z = tl.load(zb_ptr + offset + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
            z += tl.load(b2_ptr + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offset + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
            zhat = tl.where(c_ok, (z - mean) * rstd, 0.0)
            sum_zg += zhat * dy * w
            sum_g += dy * w
        c1 = tl.sum(sum_zg, axis=0) / N
        c2 = tl.sum(sum_g, axis=0) / N
        for c0 in range(0, N, BLOCK_N):
            c_ok = c0 + cols < N
            z = tl.load(zb_ptr + offset + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
            z += tl.load(b2_ptr + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offset + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + c0 + cols, mask=c_ok, other=0.0).to(tl.float32)
            zhat = tl.where(c_ok, (z - mean) * rstd, 0.0)
            dz = (dy * w - (zhat * c1 + c2)) * rstd
            tl.store(dz_ptr + offset + c0 + cols, dz.to(dz_ptr.dtype.element_ty), mask=c_ok)
            if PARTIALS:
                part_w = tl.load(part_w_row + c0 + cols, mask=c_ok, other=0.0)
                part_b = tl.load(part_b_row + c0 + cols, mask=c_ok, other=0.0)
                part_dz = tl.load(part_dz_row + c0 + cols, mask=c_ok, other=0.0)
                tl.store(part_w_row + c0 + cols, part_w + dy * zhat, mask=c_ok)
                tl.store(part_b_row + c0 + cols, part_b + dy, mask=c_ok)
                tl.store(part_dz_row + c0 + cols, part_dz + tl.where(c_ok, dz, 0.0), mask=c_ok)
        if PARTIALS:
            tl.debug_barrier()
        offset += N
