"""Inputs, the float64 reference and the comparison of the shared op's Triton launchers, for
the interpreter tests (``test_triton_*.py``)."""

import torch
import torch.nn.functional as F

from rpt_fast.ops import triton_residual_mlp as trm
from rpt_fast.ops.reference import residual_mlp_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Relative Frobenius error vs float64: (outputs y/h/mean/rstd, gradients).
TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.float16: (3e-3, 1e-2)}
OUT_NAMES = ("y", "h", "mean", "rstd")
GRAD_NAMES = ("x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias")


def make_inputs(M, d, m, dtype, strided_weights=False):
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


def rel(a, b):
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()


def reference(inputs, dy, eps=1e-5):
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


def run_kernels(inputs, dy, eps=1e-5):
    """((y, h, mean, rstd), the seven gradients) from the launchers themselves."""
    x, w1, b1, w2, b2, ln_weight, ln_bias = inputs
    y, h, z, mean, rstd = trm.residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps)
    assert z.shape == x.shape and z.dtype == x.dtype  # zb = h W2^T, kept for the backward
    grads = trm.residual_mlp_backward(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd)
    return (y, h, mean, rstd), grads


def check_kernels(M, d, m, dtype, strided_weights=False):
    """Runs the launchers on fresh random inputs; every output and gradient is written
    (finite), of the right dtype and shape, and within TOLERANCE of float64."""
    inputs = make_inputs(M, d, m, dtype, strided_weights)
    dy = torch.randn(M, d, device=DEVICE).to(dtype)
    *ref_out, ref_grads = reference(inputs, dy)
    outs, grads = run_kernels(inputs, dy)
    out_tol, grad_tol = TOLERANCE[dtype]
    for name, out, ref, want_dtype in zip(
        OUT_NAMES, outs, ref_out, (dtype, dtype, torch.float32, torch.float32)
    ):
        assert out.dtype == want_dtype and out.shape == ref.shape, name
        assert torch.isfinite(out).all(), f"{name} has unwritten (NaN) elements"
        assert rel(out, ref) < out_tol, f"{name}: relative error {rel(out, ref):.3g}"
    for name, grad, ref, param in zip(GRAD_NAMES, grads, ref_grads, inputs):
        assert grad.dtype == dtype and grad.shape == param.shape, name
        assert torch.isfinite(grad).all(), f"d{name} has unwritten (NaN) elements"
        assert rel(grad, ref) < grad_tol, f"d{name}: relative error {rel(grad, ref):.3g}"


SMALL_SPLIT_K = trm.SplitKConfig((16,), 16, 4, 1)


def small_split_k(monkeypatch, target):
    """Every split-K launch (either variant, any dtype) on 16x16 blocks, aiming at ``target``
    programs: many splits at interpreter-sized shapes."""
    monkeypatch.setattr(trm, "TARGET_PROGRAMS", target)
    monkeypatch.setattr(trm, "PLAIN_SPLITK_CONFIG", SMALL_SPLIT_K)
    for table in (trm.SPLITK_CONFIGS, trm.SPLITK_GRAD_CONFIGS):
        for dtype in list(table):
            monkeypatch.setitem(table, dtype, SMALL_SPLIT_K)


def unaligned(t):
    """A contiguous copy of ``t`` that starts 4 bytes past a 16-byte boundary, as a view such as
    ``x[1:]`` of a (M + 1, d) fp32 x with an odd d does."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = buf[1:].view(t.shape)
    view.copy_(t)
    assert view.is_contiguous() and view.data_ptr() % 16
    return view
