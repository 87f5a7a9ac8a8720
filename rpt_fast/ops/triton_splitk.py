"""Split-K kernels of the shared op for prompt-sized inputs (M <= BLOCK_M <= 128 rows).

With M = 100 rows a plain tiling gives a few dozen programs while megabytes of weights stream
through them; here every launch that reads W1 or W2 splits its long reduction (d or m) into S
chunks, so ``column blocks x S`` programs share the weight stream (grid ``(blocks, S)``). All
M rows live in one tile, so each weight tile is read exactly once per pass.

Program ``(n, s)`` writes its fp32 partial to ``part[s]``; for the kernels with an epilogue it
then takes a ticket from a per-column-block arrival counter (acq_rel atomic, after a CTA
barrier). The program drawing the last ticket sums the S partials in the fixed order
s = 0 .. S-1 (deterministic whatever the arrival order) and applies the epilogue. The counters
live in a buffer made for each call (``triton_residual_mlp._arrival_counters`` only allocates
it) and zeroed earlier in the same pass, in stream order: by the fill launch F0 before F1 in
the forward, by B1 (before B2 and B3) in the backward. The kernels never reset them, and
nothing carries over from one call to the next.

* :func:`splitk_bias_relu_kernel`   F1: ``h = relu(x W1^T + b1)``.
* :func:`splitk_partials_kernel`    F2: fp32 partials of ``h W2^T`` (the LayerNorm kernel sums them).
* :func:`da_dw2_kernel`             B2: ``da = dz W2`` zeroed where ``h <= 0`` (a NaN h passes,
  as torch's ReLU backward), ``db1``; and ``dW2 = dz^T h`` from the same dz tiles
  (dW2 needs no reduction: K = M fits one tile).
* :func:`dx_dw1_kernel`             B3: ``dx = da W1 + dy``; ``dW1 = da^T x`` from the same da
  tiles; one extra program row computes dln_weight, dln_bias and db2 from dy, zb and dz
  (M rows are few: no partials needed).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .specialise import jit_variants


@triton.jit
def _row_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Column block ``program_id(0)`` of a row-major (M, N) matrix whose M <= BLOCK_M rows fit
    one tile: row and column indices, their masks, the tile's mask and offsets."""
    rm = tl.arange(0, BLOCK_M)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    return rm, rn, m_ok, n_ok, m_ok[:, None] & n_ok[None, :], rm[:, None] * N + rn[None, :]


@triton.jit
def _last_to_arrive(count_ptr, block, n_splits):
    """True in the program that arrives last of the ``n_splits`` at column block ``block``."""
    tl.debug_barrier()  # every thread's partial store happens before the release below
    ticket = tl.atomic_add(count_ptr + block, 1, sem="acq_rel")
    return ticket == n_splits - 1


@triton.jit
def _sum_partials(part_ptr, part_stride, offs, ok, n_splits,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Fixed-order sum of the fp32 partials at ``offs`` (L2 loads: written by other SMs)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for p in range(0, n_splits):
        acc += tl.load(part_ptr + p * part_stride + offs, mask=ok, other=0.0, cache_modifier=".cg")
    return acc


@triton.jit
def _splitk_partial(
    a_ptr, b_ptr, part_ptr, M, N, K, k_chunk, stride_bk, stride_bn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    """Stores ``part[s] = A[:, K_s] @ B[K_s, n-block]`` (fp32) for program (n, s): A (M, K)
    contiguous, B by strides, part (S, M, N). Returns the tile's columns, their mask, and the
    tile's mask and offsets in (M, N)."""
    rm, rn, m_ok, n_ok, ok, offs = _row_tile(M, N, BLOCK_M, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    k_first = tl.program_id(1) * k_chunk
    k_last = tl.minimum(k_first + k_chunk, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_first, k_last, BLOCK_K):
        k_ok = k + rk < k_last
        a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :],
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + (k + rk)[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    tl.store(part_ptr + tl.program_id(1) * M * N + offs, acc, mask=ok)
    return rn, n_ok, ok, offs


@jit_variants(counts=("M",), shapes=("N", "K", "stride_bn"))
def splitk_bias_relu_kernel(
    a_ptr, b_ptr, bias_ptr, c_ptr, part_ptr, count_ptr,
    M, N, K, k_chunk, stride_bk, stride_bn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    """``C = relu(A @ B + bias)`` (NaN stays NaN); C (M, N) contiguous, part (S, M, N) fp32."""
    rn, n_ok, ok, offs = _splitk_partial(a_ptr, b_ptr, part_ptr, M, N, K, k_chunk, stride_bk,
                                         stride_bn, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
    if _last_to_arrive(count_ptr, tl.program_id(0), tl.num_programs(1)):
        acc = _sum_partials(part_ptr, M * N, offs, ok, tl.num_programs(1), BLOCK_M, BLOCK_N)
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        acc = tl.where(acc < 0.0, 0.0, acc)
        tl.store(c_ptr + offs, acc.to(c_ptr.dtype.element_ty), mask=ok)


@jit_variants(counts=("M",), shapes=("N", "K", "stride_bn"))
def splitk_partials_kernel(
    a_ptr, b_ptr, part_ptr,
    M, N, K, k_chunk, stride_bk, stride_bn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    """``part[s] = A[:, K_s] @ B[K_s, :]`` in fp32, (S, M, N); the consumer sums them in order."""
    _splitk_partial(a_ptr, b_ptr, part_ptr, M, N, K, k_chunk, stride_bk, stride_bn,
                    BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)


@triton.jit
def _data_and_weight_grads(g_ptr, w_ptr, dw_ptr, act, M, K, N, k_first, k_last,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           PRECISION: tl.constexpr):
    """For program column block ``program_id(0)`` over weight rows ``k_first..k_last`` of W
    (K, N): returns ``g[:, k] @ W[k, n-block]`` (fp32) and stores ``dW[k, n-block] = g[:, k]^T
    @ act`` (act: the (BLOCK_M, BLOCK_N) tile of the layer's input), so each weight tile is read
    once for both gradients. g (M, K) and W, dW contiguous."""
    rm, rn, m_ok, n_ok, _, _ = _row_tile(M, N, BLOCK_M, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_first, k_last, BLOCK_K):
        k_ok = k + rk < k_last
        g = tl.load(g_ptr + rm[:, None] * K + (k + rk)[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w_offs = (k + rk)[:, None] * N + rn[None, :]
        w_ok = k_ok[:, None] & n_ok[None, :]
        w = tl.load(w_ptr + w_offs, mask=w_ok, other=0.0)
        acc = tl.dot(g, w, acc, input_precision=PRECISION)
        dw = tl.dot(tl.trans(g), act, input_precision=PRECISION)
        tl.store(dw_ptr + w_offs, dw.to(dw_ptr.dtype.element_ty), mask=w_ok)
    return acc


@jit_variants(counts=("M",), shapes=("D", "HID"))
def da_dw2_kernel(
    dz_ptr, w2_ptr, h_ptr, da_ptr, db1_ptr, dw2_ptr, part_ptr, count_ptr,
    M, D, HID, k_chunk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    """Program (n, s): hidden columns n-block, d rows K_s. dz (M, D), h and da (M, HID),
    w2 and dw2 (D, HID), all contiguous; part (S, M, HID) fp32."""
    _, rn, _, n_ok, ok, offs = _row_tile(M, HID, BLOCK_M, BLOCK_N)
    h = tl.load(h_ptr + offs, mask=ok, other=0.0)
    k_first = tl.program_id(1) * k_chunk
    acc = _data_and_weight_grads(dz_ptr, w2_ptr, dw2_ptr, h, M, D, HID, k_first, tl.minimum(k_first + k_chunk, D),
                                 BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
    tl.store(part_ptr + tl.program_id(1) * M * HID + offs, acc, mask=ok)
    if _last_to_arrive(count_ptr, tl.program_id(0), tl.num_programs(1)):
        acc = _sum_partials(part_ptr, M * HID, offs, ok, tl.num_programs(1), BLOCK_M, BLOCK_N)
        da = tl.where(h.to(tl.float32) <= 0.0, 0.0, acc).to(da_ptr.dtype.element_ty)
        tl.store(da_ptr + offs, da, mask=ok)
        db1 = tl.sum(da.to(tl.float32), axis=0)  # rows past M are 0
        tl.store(db1_ptr + rn, db1.to(db1_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _layer_norm_param_grads(
    dy_ptr, zb_ptr, b2_ptr, dz_ptr, mean_ptr, rstd_ptr, dlnw_ptr, dlnb_ptr, db2_ptr, M, D,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Column block ``program_id(0)`` of dln_weight = sum dy * zhat, dln_bias = sum dy and
    db2 = sum dz over the M <= BLOCK_M rows, from the tensors themselves (no partials)."""
    rm, rn, m_ok, n_ok, ok, offs = _row_tile(M, D, BLOCK_M, BLOCK_N)
    dy = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    z = tl.load(zb_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    z += tl.load(b2_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    mean = tl.load(mean_ptr + rm, mask=m_ok, other=0.0)
    rstd = tl.load(rstd_ptr + rm, mask=m_ok, other=0.0)
    zhat = tl.where(ok, (z - mean[:, None]) * rstd[:, None], 0.0)
    dz = tl.load(dz_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(dlnw_ptr + rn, tl.sum(dy * zhat, axis=0).to(dlnw_ptr.dtype.element_ty), mask=n_ok)
    tl.store(dlnb_ptr + rn, tl.sum(dy, axis=0).to(dlnb_ptr.dtype.element_ty), mask=n_ok)
    tl.store(db2_ptr + rn, tl.sum(dz, axis=0).to(db2_ptr.dtype.element_ty), mask=n_ok)


@jit_variants(counts=("M",), shapes=("D", "HID"))
def dx_dw1_kernel(
    da_ptr, w1_ptr, x_ptr, dy_ptr, dx_ptr, dw1_ptr, part_ptr, count_ptr,
    zb_ptr, b2_ptr, dz_ptr, mean_ptr, rstd_ptr, dlnw_ptr, dlnb_ptr, db2_ptr,
    M, D, HID, k_chunk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    """Program (n, s < S): d columns n-block, hidden rows K_s. da (M, HID), x, dy, dx, zb, dz
    (M, D), w1 and dw1 (HID, D), all contiguous; part (S, M, D) fp32. Programs (n, S) compute
    column block n of dln_weight, dln_bias and db2. Grid ``(blocks, S + 1)``."""
    n_splits = tl.num_programs(1) - 1
    if tl.program_id(1) == n_splits:
        _layer_norm_param_grads(dy_ptr, zb_ptr, b2_ptr, dz_ptr, mean_ptr, rstd_ptr,
                                dlnw_ptr, dlnb_ptr, db2_ptr, M, D, BLOCK_M, BLOCK_N)
    else:
        _, _, _, _, ok, offs = _row_tile(M, D, BLOCK_M, BLOCK_N)
        x = tl.load(x_ptr + offs, mask=ok, other=0.0)
        k_first = tl.program_id(1) * k_chunk
        acc = _data_and_weight_grads(da_ptr, w1_ptr, dw1_ptr, x, M, HID, D, k_first,
                                     tl.minimum(k_first + k_chunk, HID), BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        tl.store(part_ptr + tl.program_id(1) * M * D + offs, acc, mask=ok)
        if _last_to_arrive(count_ptr, tl.program_id(0), n_splits):
            acc = _sum_partials(part_ptr, M * D, offs, ok, n_splits, BLOCK_M, BLOCK_N)
            acc += tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
            tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=ok)
