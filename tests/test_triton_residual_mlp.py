"""The shared residual MLP's Triton kernels against the float64 reference.

Without a GPU they run on CPU tensors through the Triton interpreter (set by conftest.py), so
shapes stay small; bfloat16 is left to the GPU tier (test_gpu_kernels.py). Every buffer the
launchers allocate is prefilled with NaN, so an element a kernel fails to write shows up.
"""

import pytest
import torch
import triton
from shared_op_cases import (
    DEVICE,
    GRAD_NAMES,
    OUT_NAMES,
    SMALL_SPLIT_K,
    TOLERANCE,
    check_kernels,
    make_inputs,
    reference,
    rel,
    run_kernels,
    small_split_k,
    unaligned,
)

import rpt_fast
from rpt_fast.ops import triton_residual_mlp as trm
from rpt_fast.ops.launches import Launch, ZeroFill
from rpt_fast.ops.reference import residual_mlp_reference


@pytest.fixture
def nan_buffers(monkeypatch):
    """Makes torch.empty / torch.empty_like return NaN-filled floating tensors."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))


# (M, d, m, dtype, strided_weights): every M in {1, 7, 100, 1000}, d in {8, 64, 768, 1000},
# m in {1, 5, 64, 800} at least once, each M bucket, odd sizes (m = 1500 too); the biggest
# sizes are not combined, to keep the interpreter fast.
CASES = [
    (1, 8, 1, torch.float32, False),
    (7, 64, 800, torch.float16, True),
    (100, 768, 5, torch.float16, False),
    (1000, 24, 64, torch.float32, False),
    (300, 40, 24, torch.float16, True),
    (7, 1000, 5, torch.float32, True),
    (3, 16, 1500, torch.float32, False),
]


@pytest.mark.parametrize("M, d, m, dtype, strided_weights", CASES, ids=str)
def test_kernels_match_float64_reference(M, d, m, dtype, strided_weights, nan_buffers):
    check_kernels(M, d, m, dtype, strided_weights)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_public_op_with_3d_noncontiguous_x_and_strided_weights(dtype):
    inputs = make_inputs(10, 64, 5, dtype, strided_weights=True)
    x = inputs[0].reshape(5, 2, 64).transpose(0, 1).requires_grad_()  # (2, 5, 64), strided
    weights = [t.detach().requires_grad_() for t in inputs[1:]]
    assert not x.is_contiguous() and not weights[0].is_contiguous()
    out = rpt_fast.residual_mlp(x, *weights, backend="triton")
    dy = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *weights], dy)

    ref_inputs = [t.detach().double().requires_grad_() for t in (x, *weights)]
    ref = residual_mlp_reference(*ref_inputs)
    ref_grads = torch.autograd.grad(ref, ref_inputs, dy.double())
    out_tol, grad_tol = TOLERANCE[dtype]
    assert out.shape == x.shape and out.dtype == dtype
    assert rel(out, ref) < out_tol
    for name, grad, r in zip(GRAD_NAMES, grads, ref_grads):
        assert grad.shape == r.shape, name
        assert rel(grad, r) < grad_tol, f"d{name}"


@pytest.mark.parametrize("M", [20, 150])  # split-K path (F2 partials), tiled (B1 partials)
def test_chunked_layer_norm_of_wide_rows(M, monkeypatch, nan_buffers):
    # Rows wider than 4096 take the chunked F3 and B1; shrink their chunk so a small d walks
    # several chunks (and a ragged last one) in the interpreter.
    monkeypatch.setattr(trm, "ROW_KERNEL_CONFIGS", (trm.RowKernelConfig(128, 1, 4, True),))
    monkeypatch.setattr(trm, "WIDE_BLOCK_N", 32)
    monkeypatch.setattr(trm, "MAX_PARTIALS", 8)  # several rows per program
    small_split_k(monkeypatch, 64)  # F2 in 3 splits: F3 sums 3 partials per pass
    check_kernels(M, 100, 40, torch.float32)


def test_nan_propagates_like_the_reference():
    inputs = make_inputs(7, 64, 5, torch.float32)
    inputs[0][3, 10] = float("nan")
    inputs[1][2, 5] = float("nan")  # a hidden unit whose row of w1 is poisoned
    dy = torch.randn(7, 64, device=DEVICE)
    ref_y, _, _, _, ref_grads = reference(inputs, dy)
    (y, h, _, _), grads = run_kernels(inputs, dy)
    assert torch.isnan(y).any()
    assert torch.equal(torch.isnan(y), torch.isnan(ref_y))
    for name, grad, ref in zip(GRAD_NAMES, grads, ref_grads):
        assert torch.equal(torch.isnan(grad), torch.isnan(ref)), f"d{name}"


def test_configs_are_chosen_from_shapes():
    assert [trm.small_m_block(r) for r in (1, 16, 17, 100, 128, 129)] == [16, 16, 32, 128, 128, None]
    cfg = trm.SPLITK_CONFIGS[torch.bfloat16]
    for cols, K in [(800, 2048), (2048, 800), (400, 768), (768, 400), (5, 8), (3000, 16)]:
        plan = trm.split_k(cols, K, cfg)
        assert plan.k_chunk % cfg.block_k == 0
        assert (plan.splits - 1) * plan.k_chunk < K <= plan.splits * plan.k_chunk  # no empty split
        assert plan.blocks == triton.cdiv(cols, plan.block_n)
    assert trm.row_kernel_config(8) == trm.ROW_KERNEL_CONFIGS[0]
    assert trm.row_kernel_config(trm.MAX_D).block_n == trm.MAX_D
    with pytest.raises(ValueError, match=rf"x: .*d <= {trm.MAX_D}, got d={trm.MAX_D + 1}"):
        trm.row_kernel_config(trm.MAX_D + 1)


# (M, d, m, dtype, target programs): split-K with 1, a few and many splits, ragged K (d and m
# not multiples of BLOCK_K = 16), M of 1, odd, and a full 128-row tile.
SPLIT_CASES = [
    (1, 72, 40, torch.float32, 1),
    (17, 72, 40, torch.float16, 8),
    (128, 40, 72, torch.float32, 64),
    (33, 100, 24, torch.float16, 200),
]


@pytest.mark.parametrize("M, d, m, dtype, target", SPLIT_CASES, ids=str)
def test_split_k_matches_reference(M, d, m, dtype, target, monkeypatch, poisoned):
    small_split_k(monkeypatch, target)
    splits = [trm.split_k(m, d, SMALL_SPLIT_K).splits, trm.split_k(d, m, SMALL_SPLIT_K).splits]
    assert (max(splits) == 1) == (target == 1), splits
    check_kernels(M, d, m, dtype)


@pytest.mark.parametrize("M, fills", [(5, 1), (300, 0)])
def test_launch_counts(M, fills, monkeypatch):
    """3 Triton kernels forward and 3 backward on both paths; a fill of F1's arrival counters
    before them in the split-K forward (the backward's B1 zeroes B2's and B3's); nothing else."""
    kernels, fill_calls = [], []
    kind = type(trm.matmul_kernel.hinted)  # JITFunction, or InterpretedFunction (interpreter)
    getitem, fill = kind.__getitem__, ZeroFill.__call__

    def counting_kernel(self, grid):
        kernels.append(grid)
        return getitem(self, grid)

    def counting_fill(self):
        fill_calls.append(self.name)
        fill(self)

    monkeypatch.setattr(kind, "__getitem__", counting_kernel)
    monkeypatch.setattr(ZeroFill, "__call__", counting_fill)
    x, w1, b1, w2, b2, ln_weight, ln_bias = make_inputs(M, 16, 8, torch.float32)
    y, h, z, mean, rstd = trm.residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, 1e-5)
    assert (len(kernels), len(fill_calls)) == (3, fills), (kernels, fill_calls)
    kernels.clear()
    fill_calls.clear()
    trm.residual_mlp_backward(torch.randn_like(x), x, w1, w2, b2, ln_weight, h, z, mean, rstd)
    assert (len(kernels), len(fill_calls)) == (3, 0), (kernels, fill_calls)
    forward, backward = trm.plans(M, 16, 8, torch.float32)
    assert (len(forward), len(backward)) == (3 + fills, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_zero_rows_give_zero_gradients(dtype, poisoned):
    x, w1, b1, w2, b2, ln_weight, ln_bias = make_inputs(0, 32, 8, dtype)
    y, h, z, mean, rstd = trm.residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, 1e-5)
    assert y.shape == (0, 32) and h.shape == (0, 8)
    grads = trm.residual_mlp_backward(x.clone(), x, w1, w2, b2, ln_weight, h, z, mean, rstd)
    for name, grad, param in zip(GRAD_NAMES, grads, (x, w1, b1, w2, b2, ln_weight, ln_bias)):
        assert grad.shape == param.shape and not grad.any(), f"d{name}"


@pytest.mark.parametrize("M", [9, 200])  # split-K path, tiled path
def test_unaligned_views_reach_the_kernels_aligned(M, monkeypatch):
    """Triton specialises kernels on 16-byte pointer alignment and the AOT check compiles the
    aligned variant: the launchers copy inputs that start elsewhere, same numbers."""
    unaligned_args = []
    call = Launch.__call__

    def checking(self):
        unaligned_args.extend(name for name, value in self.args.items()
                              if isinstance(value, torch.Tensor) and value.data_ptr() % 16)
        call(self)

    monkeypatch.setattr(Launch, "__call__", checking)
    inputs = make_inputs(M, 37, 5, torch.float32)
    dy = torch.randn(M, 37, device=DEVICE)
    *ref_out, ref_grads = reference(inputs, dy)
    outs, grads = run_kernels([unaligned(t) for t in inputs], unaligned(dy))
    assert unaligned_args == []
    for name, out, ref in zip(OUT_NAMES, outs, ref_out):
        assert rel(out, ref) < TOLERANCE[torch.float32][0], name
    for name, grad, ref in zip(GRAD_NAMES, grads, ref_grads):
        assert rel(grad, ref) < TOLERANCE[torch.float32][1], f"d{name}"
