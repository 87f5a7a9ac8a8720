"""The shared residual MLP's Triton kernels against the float64 reference.

Without a GPU they run on CPU tensors through the Triton interpreter (set by conftest.py), so
shapes stay small; bfloat16 is left to the GPU tier (test_gpu_kernels.py). Every buffer the
launchers allocate is prefilled with NaN, so an element a kernel fails to write shows up.
"""

import pytest
import torch
import torch.nn.functional as F
import triton

import rpt_fast
from rpt_fast.ops import triton_residual_mlp as trm
from rpt_fast.ops.reference import residual_mlp_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Relative Frobenius error vs float64: (outputs y/h/mean/rstd, gradients).
TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.float16: (3e-3, 1e-2)}
GRAD_NAMES = ("x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias")


def _inputs(M, d, m, dtype, strided_weights=False):
    """Random inputs scaled so the LayerNorm sees well-spread rows (never zeros)."""
    if strided_weights:
        w1 = torch.randn(d, m, device=DEVICE).t()  # (m, d), strides (1, m)
        w2 = torch.randn(d, 2 * m, device=DEVICE)[:, ::2]  # (d, m), strides (2m, 2)
    else:
        w1 = torch.randn(m, d, device=DEVICE)
        w2 = torch.randn(d, m, device=DEVICE)
    tensors = (
        torch.randn(M, d, device=DEVICE),
        w1 / d**0.5,
        0.1 * torch.randn(m, device=DEVICE),
        w2 / m**0.5,
        0.1 * torch.randn(d, device=DEVICE),
        1 + 0.1 * torch.randn(d, device=DEVICE),
        0.1 * torch.randn(d, device=DEVICE),
    )
    return [t.to(dtype) for t in tensors]


def _rel(a, b):
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()


def _reference(inputs, dy, eps=1e-5):
    """float64 (y, h, mean, rstd) and the seven gradients, on upcast copies."""
    ref = [t.detach().double().requires_grad_() for t in inputs]
    y = residual_mlp_reference(*ref, eps)
    grads = torch.autograd.grad(y, ref, dy.double())
    with torch.no_grad():
        x, w1, b1, w2, b2 = ref[:5]
        h = F.relu(F.linear(x, w1, b1))
        z = F.linear(h, w2, b2)
        mean = z.mean(-1)
        rstd = torch.rsqrt(z.var(-1, unbiased=False) + eps)
    return y.detach(), h, mean, rstd, grads


@pytest.fixture
def nan_buffers(monkeypatch):
    """Makes torch.empty / torch.empty_like return NaN-filled floating tensors."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))


def _run_kernels(inputs, dy, eps=1e-5):
    x, w1, b1, w2, b2, ln_weight, ln_bias = inputs
    y, h, z, mean, rstd = trm.residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps)
    assert z.shape == x.shape and z.dtype == x.dtype  # zb = h W2^T, kept for the backward
    grads = trm.residual_mlp_backward(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd)
    return (y, h, mean, rstd), grads


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
    inputs = _inputs(M, d, m, dtype, strided_weights)
    dy = torch.randn(M, d, device=DEVICE).to(dtype)
    *ref_out, ref_grads = _reference(inputs, dy)
    outs, grads = _run_kernels(inputs, dy)
    out_tol, grad_tol = TOLERANCE[dtype]
    for name, out, ref, want_dtype in zip(
        ("y", "h", "mean", "rstd"), outs, ref_out, (dtype, dtype, torch.float32, torch.float32)
    ):
        assert out.dtype == want_dtype and out.shape == ref.shape, name
        assert torch.isfinite(out).all(), f"{name} has unwritten (NaN) elements"
        assert _rel(out, ref) < out_tol, name
    for name, grad, ref, param in zip(GRAD_NAMES, grads, ref_grads, inputs):
        assert grad.dtype == dtype and grad.shape == param.shape, name
        assert torch.isfinite(grad).all(), f"d{name} has unwritten (NaN) elements"
        assert _rel(grad, ref) < grad_tol, f"d{name}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_public_op_with_3d_noncontiguous_x_and_strided_weights(dtype):
    inputs = _inputs(10, 64, 5, dtype, strided_weights=True)
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
    assert _rel(out, ref) < out_tol
    for name, grad, r in zip(GRAD_NAMES, grads, ref_grads):
        assert grad.shape == r.shape, name
        assert _rel(grad, r) < grad_tol, f"d{name}"


@pytest.mark.parametrize("M", [20, 150])  # split-K path (no partials), tiled path (partials)
def test_chunked_backward_of_wide_rows(M, monkeypatch, nan_buffers):
    # Rows wider than 4096 take the chunked LayerNorm backward; shrink its chunk so a small d
    # walks several chunks (and a ragged last one) in the interpreter.
    monkeypatch.setattr(trm, "ROW_KERNEL_CONFIGS", (trm.RowKernelConfig(128, 1, 4, True),))
    monkeypatch.setattr(trm, "WIDE_BACKWARD_BLOCK_N", 32)
    monkeypatch.setattr(trm, "MAX_PARTIALS", 8)  # several rows per program
    inputs = _inputs(M, 100, 8, torch.float32)
    dy = torch.randn(M, 100, device=DEVICE)
    ref_grads = _reference(inputs, dy)[4]
    _, grads = _run_kernels(inputs, dy)
    for name, grad, ref in zip(GRAD_NAMES, grads, ref_grads):
        assert torch.isfinite(grad).all(), f"d{name} has unwritten (NaN) elements"
        assert _rel(grad, ref) < TOLERANCE[torch.float32][1], f"d{name}"


@pytest.mark.gpu  # the interpreter runs programs one after another: it cannot show a race
def test_bitwise_deterministic():
    # 300 rows: B2 programs own several rows each, so the partial sums have real depth.
    inputs = _inputs(300, 32, 8, torch.float32)
    dy = torch.randn(300, 32, device=DEVICE)
    first, second = _run_kernels(inputs, dy), _run_kernels(inputs, dy)
    for a, b in zip((*first[0], *first[1]), (*second[0], *second[1])):
        assert torch.equal(a, b)


def test_nan_propagates_like_the_reference():
    inputs = _inputs(7, 64, 5, torch.float32)
    inputs[0][3, 10] = float("nan")
    inputs[1][2, 5] = float("nan")  # a hidden unit whose row of w1 is poisoned
    dy = torch.randn(7, 64, device=DEVICE)
    ref_y, _, _, _, ref_grads = _reference(inputs, dy)
    (y, h, _, _), grads = _run_kernels(inputs, dy)
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
    monkeypatch.setattr(trm, "TARGET_PROGRAMS", target)
    for table in (trm.SPLITK_CONFIGS, trm.SPLITK_GRAD_CONFIGS):
        monkeypatch.setitem(table, dtype, trm.SplitKConfig((16,), 16, 4, 1))
    inputs = _inputs(M, d, m, dtype)
    dy = torch.randn(M, d, device=DEVICE).to(dtype)
    splits = [trm.split_k(m, d, trm.SPLITK_CONFIGS[dtype]).splits,
              trm.split_k(d, m, trm.SPLITK_CONFIGS[dtype]).splits]
    assert (max(splits) == 1) == (target == 1), splits
    *ref_out, ref_grads = _reference(inputs, dy)
    outs, grads = _run_kernels(inputs, dy)
    out_tol, grad_tol = TOLERANCE[dtype]
    for name, out, ref in zip(("y", "h", "mean", "rstd"), outs, ref_out):
        assert torch.isfinite(out).all(), f"{name} has unwritten (NaN) elements"
        assert _rel(out, ref) < out_tol, name
    for name, grad, ref in zip(GRAD_NAMES, grads, ref_grads):
        assert torch.isfinite(grad).all(), f"d{name} has unwritten (NaN) elements"
        assert _rel(grad, ref) < grad_tol, f"d{name}"
    for counters in trm._COUNTERS.values():  # every launch left its arrival counters at 0
        assert counters.device.type == "meta" or not counters.any()  # meta: launch plans


@pytest.mark.parametrize("M", [5, 300])
def test_launch_counts(M, monkeypatch):
    """At most 3 launches forward and 5 backward (here 3 and 3), on both paths."""
    launched = []
    kind = type(trm.matmul_kernel)  # JITFunction, or InterpretedFunction in the interpreter
    getitem = kind.__getitem__

    def counting(self, grid):
        launched.append(grid)
        return getitem(self, grid)

    monkeypatch.setattr(kind, "__getitem__", counting)
    x, w1, b1, w2, b2, ln_weight, ln_bias = _inputs(M, 16, 8, torch.float32)
    y, h, z, mean, rstd = trm.residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, 1e-5)
    assert len(launched) == 3, launched
    launched.clear()
    trm.residual_mlp_backward(torch.randn_like(x), x, w1, w2, b2, ln_weight, h, z, mean, rstd)
    assert len(launched) == 3, launched


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_zero_rows_give_zero_gradients(dtype, poisoned):
    x, w1, b1, w2, b2, ln_weight, ln_bias = _inputs(0, 32, 8, dtype)
    y, h, z, mean, rstd = trm.residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, 1e-5)
    assert y.shape == (0, 32) and h.shape == (0, 8)
    grads = trm.residual_mlp_backward(x.clone(), x, w1, w2, b2, ln_weight, h, z, mean, rstd)
    for name, grad, param in zip(GRAD_NAMES, grads, (x, w1, b1, w2, b2, ln_weight, ln_bias)):
        assert grad.shape == param.shape and not grad.any(), f"d{name}"
