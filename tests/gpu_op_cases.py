"""Inputs and the Triton forward + backward step of the shared op, for the GPU-tier tests that
capture and replay it (``test_gpu_cuda_graphs.py``, ``test_gpu_launch_history.py``)."""

import torch

import rpt_fast


def cuda_params(d, m, dtype):
    """w1, b1, w2, b2, LayerNorm weight and bias on CUDA in ``dtype``, scaled so the LayerNorm
    sees well-spread rows, each requiring its gradient."""
    w1 = torch.randn(m, d, device="cuda") / d**0.5
    w2 = torch.randn(d, m, device="cuda") / m**0.5
    tensors = (w1, 0.1 * torch.randn(m, device="cuda"), w2, 0.1 * torch.randn(d, device="cuda"),
               1 + 0.1 * torch.randn(d, device="cuda"), 0.1 * torch.randn(d, device="cuda"))
    return [t.to(dtype).requires_grad_() for t in tensors]


def triton_step(x, params, dy):
    """y and the gradients of x and every parameter, through the Triton backend."""
    y = rpt_fast.residual_mlp(x, *params, backend="triton")
    return (y, *torch.autograd.grad(y, [x, *params], dy))
