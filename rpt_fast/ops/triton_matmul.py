"""A stride-driven tiled matmul tile with constexpr epilogues, and the two kernels built on it.

``C = epilogue(A @ B)`` where A is (M, K) and B is (K, N), both read through arbitrary strides,
so a transposed or non-contiguous weight (a ZeRO-3 Parameter) is used in place, never copied.
Each tile owns its output and walks K in order, or sums its split-K partials in a fixed order:
results are bitwise reproducible.

These serve inputs with many rows (M > 128); ``triton_splitk`` serves prompt-sized ones.

* :func:`matmul_kernel`: one problem per launch (forward F1/F2, backward B2).
* :func:`backward_grads_kernel`: one launch for the rest of the backward. Its program ids
  are split into four ranges: column sums of the LayerNorm partials (dln_weight, dln_bias,
  db2), then the tiles of dW1 = da^T x (+ db1) and dW2 = dz^T h, each split over the M rows
  (fp32 partials, an arrival counter per tile, fixed-order sum by the last program; as in
  ``triton_splitk``), and the tiles of dx = da W1 + dy.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .specialise import jit_variants

# Epilogues, applied to the fp32 accumulator before the store.
EPI_NONE = 0  # C = A @ B
EPI_BIAS = 1  # C = A @ B + bias[n]
EPI_BIAS_RELU = 2  # C = relu(A @ B + bias[n])   (NaN stays NaN, as torch.relu)
EPI_RELU_MASK = 3  # C = A @ B, 0 where aux[m, n] <= 0   (the ReLU backward; aux is h: a NaN h
#                    passes its gradient, as torch's threshold_backward)
EPI_ADD = 4  # C = A @ B + aux[m, n]


@triton.jit
def _accumulate(a, b, acc, a_sum, ROWSUM: tl.constexpr, PRECISION: tl.constexpr):
    # A running (BLOCK_M, BLOCK_K) sum reduced once after the loop: a reduction inside the
    # loop trips an assertion in Triton's OptimizeThreadLocality pass for fp32.
    if ROWSUM:
        a_sum += a.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION), a_sum


@triton.jit
def _tile_coords(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of output tile ``tile`` in grouped ordering (Triton's matmul tutorial)."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    tiles_per_group = GROUP_M * num_pid_n
    group = tile // tiles_per_group
    first_m = group * GROUP_M
    group_rows = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (tile % tiles_per_group) % group_rows
    pid_n = (tile % tiles_per_group) // group_rows
    return pid_m, pid_n


@triton.jit
def _tile_dot(
    a_ptr, b_ptr, M, N, k_first, k_last,
    stride_am, stride_ak, stride_bk, stride_bn,
    pid_m, pid_n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ROWSUM: tl.constexpr, PRECISION: tl.constexpr,
):
    """fp32 ``A[m-block, k_first:k_last] @ B[k_first:k_last, n-block]`` and, with ROWSUM, the
    running (BLOCK_M, BLOCK_K) sum of the A tiles (reduce with ``tl.sum(., axis=1)``)."""
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = pid_m * BLOCK_M + rm < M
    n_ok = pid_n * BLOCK_N + rn < N
    # Small 32-bit offsets within the tile from 64-bit scalar base pointers that advance along
    # K: half the registers of 64-bit pointer tiles, no overflow on large tensors.
    k0 = tl.cast(k_first, tl.int64)  # k_first may be the literal 0
    a_base = a_ptr + (pid_m * BLOCK_M).to(tl.int64) * stride_am + k0 * stride_ak
    b_base = b_ptr + (pid_n * BLOCK_N).to(tl.int64) * stride_bn + k0 * stride_bk
    a_offs = rm[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_offs = offs_k[:, None] * stride_bk + rn[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    a_sum = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    # Whole K blocks first, unmasked along K so loads vectorize; then the masked tail.
    k_len = k_last - k_first
    k_whole = (k_len // BLOCK_K) * BLOCK_K
    for _ in range(0, k_whole, BLOCK_K):
        a = tl.load(a_base + a_offs, mask=m_ok[:, None], other=0.0)
        b = tl.load(b_base + b_offs, mask=n_ok[None, :], other=0.0)
        acc, a_sum = _accumulate(a, b, acc, a_sum, ROWSUM, PRECISION)
        a_base += BLOCK_K * stride_ak
        b_base += BLOCK_K * stride_bk
    if k_whole < k_len:
        k_ok = offs_k < k_len - k_whole
        a = tl.load(a_base + a_offs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_base + b_offs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc, a_sum = _accumulate(a, b, acc, a_sum, ROWSUM, PRECISION)
    return acc, a_sum


@triton.jit
def _matmul_tile(
    a_ptr, b_ptr, c_ptr, bias_ptr, aux_ptr, rowsum_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn, stride_auxm, stride_auxn,
    tile,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EPILOGUE: tl.constexpr, ROWSUM: tl.constexpr, PRECISION: tl.constexpr,
):
    """Computes output tile number ``tile`` over the whole of K.

    With ``ROWSUM`` the tiles of the first column block also store ``sum_k A[m, k]`` (fp32
    accumulated, in rowsum's dtype): the bias gradient when A is a transposed output gradient.
    """
    pid_m, pid_n = _tile_coords(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc, a_sum = _tile_dot(a_ptr, b_ptr, M, N, 0, K, stride_am, stride_ak, stride_bk, stride_bn,
                           pid_m, pid_n, BLOCK_M, BLOCK_N, BLOCK_K, ROWSUM, PRECISION)
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    m_ok = pid_m * BLOCK_M + rm < M
    n_ok = pid_n * BLOCK_N + rn < N
    row0 = (pid_m * BLOCK_M).to(tl.int64)
    col0 = (pid_n * BLOCK_N).to(tl.int64)
    if EPILOGUE == 1 or EPILOGUE == 2:
        acc += tl.load(bias_ptr + col0 + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if EPILOGUE == 2:
        acc = tl.where(acc < 0.0, 0.0, acc)
    if EPILOGUE == 3 or EPILOGUE == 4:
        aux_ptrs = (aux_ptr + row0 * stride_auxm + col0 * stride_auxn
                    + rm[:, None] * stride_auxm + rn[None, :] * stride_auxn)
        aux = tl.load(aux_ptrs, mask=m_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
        if EPILOGUE == 3:
            acc = tl.where(aux <= 0.0, 0.0, acc)
        else:
            acc += aux
    c_ptrs = (c_ptr + row0 * stride_cm + col0 * stride_cn
              + rm[:, None] * stride_cm + rn[None, :] * stride_cn)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    if ROWSUM:
        if pid_n == 0:  # a scalar condition, not a mask: masks must be tensors (triton 3.9)
            rowsum = tl.sum(a_sum, axis=1)
            tl.store(rowsum_ptr + row0 + rm, rowsum.to(rowsum_ptr.dtype.element_ty), mask=m_ok)


@triton.jit
def _split_grad_tile(
    a_ptr, b_ptr, c_ptr, rowsum_ptr, part_ptr, part_sum_ptr, count_ptr,
    M, N, K, k_chunk, splits,
    stride_am, stride_ak, stride_bk, stride_bn,
    job,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ROWSUM: tl.constexpr, PRECISION: tl.constexpr,
):
    """Tile ``job // splits`` of the contiguous (M, N) ``C = A @ B`` over K chunk
    ``job % splits`` (a weight gradient whose K = the many rows). Each program stores its fp32
    partial (and, with ROWSUM in the first column block, its row-sum partial) and takes a
    ticket from the tile's arrival counter; the last to arrive sums the ``splits`` partials in
    order 0..splits-1 and stores C (and rowsum).
    part is (splits, M, N) fp32, part_sum (splits, M) fp32, count one int32 per tile, zeroed
    earlier in the same pass, not necessarily by the launch just before (in the shared op's
    backward by B1; the tiled B2 runs between B1 and the B3 that calls this)."""
    tile = job // splits
    split = job % splits
    pid_m, pid_n = _tile_coords(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    k_first = split * k_chunk
    k_last = tl.minimum(k_first + k_chunk, K)
    acc, a_sum = _tile_dot(a_ptr, b_ptr, M, N, k_first, k_last, stride_am, stride_ak,
                           stride_bk, stride_bn, pid_m, pid_n,
                           BLOCK_M, BLOCK_N, BLOCK_K, ROWSUM, PRECISION)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ok = (rows < M)[:, None] & (cols < N)[None, :]
    offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
    tl.store(part_ptr + split.to(tl.int64) * M * N + offs, acc, mask=ok)
    if ROWSUM:
        if pid_n == 0:
            tl.store(part_sum_ptr + split * M + rows, tl.sum(a_sum, axis=1), mask=rows < M)
    tl.debug_barrier()  # every thread's partial store happens before the release below
    ticket = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel")
    if ticket == splits - 1:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        row_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for p in range(0, splits):
            acc += tl.load(part_ptr + p * M * N + offs, mask=ok, other=0.0, cache_modifier=".cg")
            if ROWSUM:
                row_sum += tl.load(part_sum_ptr + p * M + rows, mask=rows < M, other=0.0,
                                   cache_modifier=".cg")
        tl.store(c_ptr + offs, acc.to(c_ptr.dtype.element_ty), mask=ok)
        if ROWSUM:
            if pid_n == 0:
                tl.store(rowsum_ptr + rows, row_sum.to(rowsum_ptr.dtype.element_ty), mask=rows < M)


@jit_variants(counts=("M",), shapes=("N", "K", "stride_am", "stride_bk", "stride_bn", "stride_cm",
                                      "stride_auxm"))
def matmul_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, aux_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn, stride_auxm, stride_auxn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EPILOGUE: tl.constexpr, PRECISION: tl.constexpr,
):
    """``C = epilogue(A @ B)``; grid: one program per output tile."""
    _matmul_tile(
        a_ptr, b_ptr, c_ptr, bias_ptr, aux_ptr, c_ptr,
        M, N, K,
        stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn, stride_auxm, stride_auxn,
        tl.program_id(0),
        BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, EPILOGUE, False, PRECISION,
    )


@triton.jit
def _column_sums(part_ptr, out_ptr, P, N, col_block, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """``out[c] = sum_p part[p, c]`` for one column block of a (P, N) fp32 array, fixed order."""
    cols = col_block * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < N
    rows = tl.arange(0, BLOCK_P)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        ptrs = part_ptr + (p0 + rows)[:, None] * N + cols[None, :]
        acc += tl.load(ptrs, mask=((p0 + rows) < P)[:, None] & c_ok[None, :], other=0.0)
    tl.store(out_ptr + cols, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=c_ok)


@jit_variants(counts=("M", "P", "splits"), shapes=("D", "HID", "stride_w1h"))
def backward_grads_kernel(
    da_ptr, dz_ptr, x_ptr, h_ptr, w1_ptr, dy_ptr,
    dw1_ptr, db1_ptr, dw2_ptr, db2_ptr, dx_ptr,
    part_w_ptr, part_b_ptr, part_dz_ptr, dlnw_ptr, dlnb_ptr,
    part_dw1_ptr, part_db1_ptr, part_dw2_ptr, count_ptr,
    M, D, HID, P, k_chunk, splits,
    stride_w1h, stride_w1d,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, PRECISION: tl.constexpr,
):
    """The backward after dz and da exist, in one launch (see the module docstring).

    x, dy, dz, dx are (M, D) and h, da (M, HID), all contiguous; w1 is (HID, D) through its
    strides; dw1 (HID, D) and dw2 (D, HID) are contiguous; part_* are (P, D) fp32. dW1 and dW2
    reduce over the M rows in ``splits`` chunks of ``k_chunk`` rows (``_split_grad_tile``:
    part_dw1 (splits, HID, D), part_db1 (splits, HID), part_dw2 (splits, D, HID) fp32, one
    counter per dW1 tile then per dW2 tile), so their long reductions spread over the GPU.
    """
    pid = tl.program_id(0)
    n_red = tl.cdiv(D, BLOCK_C)
    n_dw1 = tl.cdiv(HID, BLOCK_M) * tl.cdiv(D, BLOCK_N)
    n_dw2 = tl.cdiv(D, BLOCK_M) * tl.cdiv(HID, BLOCK_N)
    if pid < n_red:
        _column_sums(part_w_ptr, dlnw_ptr, P, D, pid, BLOCK_P, BLOCK_C)
        _column_sums(part_b_ptr, dlnb_ptr, P, D, pid, BLOCK_P, BLOCK_C)
        _column_sums(part_dz_ptr, db2_ptr, P, D, pid, BLOCK_P, BLOCK_C)
    elif pid < n_red + n_dw1 * splits:
        # dW1 (HID, D) = da^T x, K = M; db1 = sum over rows of da.
        _split_grad_tile(
            da_ptr, x_ptr, dw1_ptr, db1_ptr, part_dw1_ptr, part_db1_ptr, count_ptr,
            HID, D, M, k_chunk, splits,
            1, HID, D, 1,
            pid - n_red,
            BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, True, PRECISION,
        )
    elif pid < n_red + (n_dw1 + n_dw2) * splits:
        # dW2 (D, HID) = dz^T h, K = M.
        _split_grad_tile(
            dz_ptr, h_ptr, dw2_ptr, dw2_ptr, part_dw2_ptr, part_dw2_ptr, count_ptr + n_dw1,
            D, HID, M, k_chunk, splits,
            1, D, HID, 1,
            pid - n_red - n_dw1 * splits,
            BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, False, PRECISION,
        )
    else:
        # dx (M, D) = da W1 + dy, K = HID.
        _matmul_tile(
            da_ptr, w1_ptr, dx_ptr, dx_ptr, dy_ptr, dx_ptr,
            M, D, HID,
            HID, 1, stride_w1h, stride_w1d, D, 1, D, 1,
            pid - n_red - (n_dw1 + n_dw2) * splits,
            BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, 4, False, PRECISION,
        )
