"""Public functional ops: input checks, autocast, backend choice and the autograd Functions.

The Functions (here, and the native ops' own in ``csrc/autograd.cpp``) save the weight tensors
they are given (the ``nn.Parameter`` objects themselves, never copies or transposes), so
DeepSpeed ZeRO-3 can release them after the forward and gather them again before the
backward. Every tensor that reaches a kernel backend is contiguous (strided views are copied
once per call here), so kernels may assume it.
"""

from __future__ import annotations

import torch

from . import _library
from ._backends import resolve_backend
from ._validation import check_eps, check_grouped_inputs, check_residual_mlp_inputs
from .ops import native
from .ops.reference import grouped_residual_mlp_reference, residual_mlp_reference


def _compiling() -> bool:
    return torch.compiler.is_compiling()


class _ResidualMLPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, ln_weight, ln_bias, eps, backend, grouped):
        if _compiling():
            fwd = _library.grouped_residual_mlp_fwd if grouped else _library.residual_mlp_fwd
        else:
            fwd = _library.grouped_forward_impl if grouped else _library.residual_mlp_forward_impl
        y, h, z, mean, rstd = fwd(x, w1, b1, w2, b2, ln_weight, ln_bias, eps, backend)
        ctx.save_for_backward(x, w1, w2, b2, ln_weight, h, z, mean, rstd)
        ctx.backend = backend
        ctx.grouped = grouped
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w1, w2, b2, ln_weight, h, z, mean, rstd = ctx.saved_tensors
        if _compiling():
            bwd = _library.grouped_residual_mlp_bwd if ctx.grouped else _library.residual_mlp_bwd
        else:
            bwd = _library.grouped_backward_impl if ctx.grouped else _library.residual_mlp_backward_impl
        grads = bwd(dy.contiguous(), x, w1, w2, b2, ln_weight, h, z, mean, rstd, ctx.backend)
        return (*grads, None, None, None)


def _autocast(tensors: tuple) -> tuple:
    """Under ``torch.autocast`` run in the autocast dtype, as ``nn.Linear`` does."""
    x = tensors[0]
    if not isinstance(x, torch.Tensor) or not torch.is_autocast_enabled(x.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(x.device.type)
    return tuple(
        t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
        for t in tensors
    )


def _run(tensors, eps, backend, grouped):
    x = tensors[0]
    name = resolve_backend(backend, x)
    if torch.is_autocast_enabled(x.device.type):  # cast already: run in that dtype, as given
        with torch.autocast(x.device.type, enabled=False):
            return _dispatch(tensors, eps, name, grouped)
    return _dispatch(tensors, eps, name, grouped)


def _dispatch(tensors, eps, name, grouped):
    x = tensors[0]
    if name == "eager":
        ref = grouped_residual_mlp_reference if grouped else residual_mlp_reference
        return ref(*tensors, eps)
    weights = _contiguous(tensors[1:])
    if x.dim() == 2 and x.is_contiguous():  # no view nodes in the autograd graph
        return _apply(x, weights, eps, name, grouped)
    y = _apply(x.reshape(-1, x.shape[-1]).contiguous(), weights, eps, name, grouped)
    return y.view(x.shape)


def _apply(x, weights, eps, backend, grouped):
    """y for a 2-D contiguous x. The native ops carry their own autograd in C++, so no Python
    runs between their forward and backward kernels (csrc/autograd.cpp says what that saves);
    under torch.compile, and for no rows, the Function around the custom ops serves every
    backend."""
    if backend == "native" and x.shape[0] > 0 and not _compiling():
        fused = native.grouped_residual_mlp if grouped else native.residual_mlp
        return fused(x, *weights, eps)
    return _ResidualMLPFunction.apply(x, *weights, eps, backend, grouped)


def _contiguous(tensors: tuple) -> tuple:
    """The kernel backends take contiguous tensors only: this is where that holds.

    ``.contiguous()`` returns a contiguous tensor itself (a ZeRO-3 Parameter reaches the
    Function, which saves it, as the object it is); a strided, transposed or expanded view
    becomes one copy per call, and autograd sums its gradient back into the caller's tensor.
    """
    return tuple(t.contiguous() for t in tensors)


def residual_mlp(x, w1, b1, w2, b2, ln_weight, ln_bias, eps=1e-5, *, backend="auto"):
    """The residual prompt encoder, fused:
    ``LayerNorm(ReLU(x @ w1.T + b1) @ w2.T + b2) * ln_weight + ln_bias + x``.

    Args:
        x: (..., d) input rows, any leading dims.
        w1, b1: the down projection, (m, d) and (m,), laid out as ``nn.Linear``.
        w2, b2: the up projection, (d, m) and (d,).
        ln_weight, ln_bias: LayerNorm affine parameters, (d,).
        eps: LayerNorm epsilon.
        backend: "auto" (fastest available), "triton", "native" or "eager" (the reference).

    Returns a tensor of x's shape and dtype (the autocast dtype under ``torch.autocast``).
    All inputs share one dtype and device and may have any strides (transposed, sliced,
    expanded views); errors name the offending argument.
    """
    tensors = _autocast((x, w1, b1, w2, b2, ln_weight, ln_bias))
    check_residual_mlp_inputs(*tensors)
    return _run(tensors, check_eps(eps), backend, grouped=False)


def grouped_residual_mlp(x, w1, b1, w2, b2, ln_weight, ln_bias, eps=1e-5, *, backend="auto"):
    """The "separate" variant: row ``i`` of ``x`` (n, d) goes through its own MLP ``i``.

    Shapes: w1 (n, m, d), b1 (n, m), w2 (n, d, m), b2 (n, d), ln_weight and ln_bias (n, d).
    Same dtype, backend and autocast rules as :func:`residual_mlp`.
    """
    tensors = _autocast((x, w1, b1, w2, b2, ln_weight, ln_bias))
    check_grouped_inputs(*tensors)
    return _run(tensors, check_eps(eps), backend, grouped=True)
