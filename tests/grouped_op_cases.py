"""Inputs and the float64 comparison of the grouped op's Triton kernels, for the interpreter
tests (``test_triton_*.py``)."""

import torch

from rpt_fast import grouped_residual_mlp
from rpt_fast.ops.reference import grouped_residual_mlp_reference

# Max |triton - reference| relative to max(1, max |reference|) of each output: a few fp32 ulps
# of the fp32 accumulation; about four ulps of fp16/bf16 storage of h and the outputs.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
NAMES = ("y", "dx", "dw1", "db1", "dw2", "db2", "dln_weight", "dln_bias")


def make_inputs(n, d, m, dtype=torch.float64):
    """x (n, d) and the six stacked parameters, scaled like a trained encoder's."""
    x = torch.randn(n, d, dtype=dtype)
    w1 = torch.randn(n, m, d, dtype=dtype) / d**0.5
    b1 = 0.1 * torch.randn(n, m, dtype=dtype)
    w2 = torch.randn(n, d, m, dtype=dtype) / m**0.5
    b2 = 0.1 * torch.randn(n, d, dtype=dtype)
    ln_weight = 1 + 0.1 * torch.randn(n, d, dtype=dtype)
    ln_bias = 0.1 * torch.randn(n, d, dtype=dtype)
    return [x, w1, b1, w2, b2, ln_weight, ln_bias]


def value_and_grads(fn, leaves, dy, **kwargs):
    leaves = [t.detach().requires_grad_() for t in leaves]
    y = fn(*leaves, **kwargs)
    return [y.detach()] + list(torch.autograd.grad(y, leaves, dy))


def relative_error(o, r):
    return (o.double() - r).abs().max().item() / max(1.0, r.abs().max().item())


def check_against_reference(tensors, dtype):
    """Runs the Triton backend in ``dtype``; compares with float64 on the same rounded inputs."""
    low = [t.to(dtype) for t in tensors]
    dy = torch.randn_like(low[0])
    ref = value_and_grads(grouped_residual_mlp_reference, [t.double() for t in low], dy.double())
    got = value_and_grads(grouped_residual_mlp, low, dy, backend="triton")
    for name, o, r in zip(NAMES, got, ref):
        assert o.dtype == dtype and o.shape == r.shape, name
        err = relative_error(o, r)
        assert err <= TOLERANCE[dtype], f"{name}: error {err:.3g} > {TOLERANCE[dtype]} ({dtype})"
    return got, low
