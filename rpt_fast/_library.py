"""``torch.library`` registration of the fused ops, so ``torch.compile`` traces through them.

The forward and backward kernels of each op are custom ops with fake (meta) implementations;
the autograd Functions in ``functional.py`` call them. Outside of compilation the Functions
call the implementations directly and skip the dispatcher, whose overhead matters for the
launch-bound prompt-sized calls.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from .ops import load_backend
from .ops.fakes import gradients_like, stats_dtype


def _saved_z(x: Tensor, rows: int, backend: str, grouped: bool) -> Tensor:
    """The z slot of a backend's forward, as that backend fills it (see ``rpt_fast.ops``): every
    kernel backend keeps (rows, d) of z for its backward, so it reads no weight twice: z - b2 in
    x's dtype, except the grouped Triton op's fp32 z."""
    dtype = torch.float32 if grouped and backend == "triton" else x.dtype
    return x.new_empty((rows, x.shape[1]), dtype=dtype)


def _zero_rows_forward(x: Tensor, m: int, backend: str, grouped: bool):
    rows = x.new_empty((0,), dtype=stats_dtype(x))
    z = _saved_z(x, 0, backend, grouped)
    return torch.empty_like(x), x.new_empty((0, m)), z, rows, rows.clone()


def _zero_rows_backward(dy, x, w1, w2, b2, ln_weight):
    zeros = [torch.zeros_like(t) for t in (w1, w1[..., 0], w2, b2, ln_weight, ln_weight)]
    return (torch.empty_like(x), *zeros)


_FWD_NAMES = ("x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias")
_BWD_NAMES = ("dy", "x", "w1", "w2", "b2", "ln_weight", "h", "z", "mean", "rstd")


def _require_contiguous(names: tuple, tensors: tuple) -> None:
    """The kernels index their inputs as contiguous; ``rpt_fast.residual_mlp`` and
    ``grouped_residual_mlp`` copy views before calling here, a direct call of the custom op must
    too (a flag read per tensor, no copy, no sync)."""
    for name, t in zip(names, tensors):
        if not t.is_contiguous():
            raise ValueError(
                f"{name}: the rpt_fast custom ops take contiguous tensors, got shape {tuple(t.shape)} "
                f"with strides {t.stride()}; call rpt_fast.residual_mlp / grouped_residual_mlp, "
                "which accept any strides"
            )


def _on(x: Tensor):
    """Kernels launch on the current CUDA device: make it x's."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def residual_mlp_forward_impl(x, w1, b1, w2, b2, ln_weight, ln_bias, eps, backend):
    _require_contiguous(_FWD_NAMES, (x, w1, b1, w2, b2, ln_weight, ln_bias))
    if x.shape[0] == 0:
        return _zero_rows_forward(x, w1.shape[0], backend, grouped=False)
    with _on(x):
        return load_backend(backend).residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps)


def residual_mlp_backward_impl(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd, backend):
    _require_contiguous(_BWD_NAMES, (dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd))
    if x.shape[0] == 0:
        return _zero_rows_backward(dy, x, w1, w2, b2, ln_weight)
    with _on(x):
        return load_backend(backend).residual_mlp_backward(
            dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd
        )


def grouped_forward_impl(x, w1, b1, w2, b2, ln_weight, ln_bias, eps, backend):
    _require_contiguous(_FWD_NAMES, (x, w1, b1, w2, b2, ln_weight, ln_bias))
    if x.shape[0] == 0:
        return _zero_rows_forward(x, w1.shape[1], backend, grouped=True)
    with _on(x):
        return load_backend(backend).grouped_residual_mlp_forward(
            x, w1, b1, w2, b2, ln_weight, ln_bias, eps
        )


def grouped_backward_impl(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd, backend):
    _require_contiguous(_BWD_NAMES, (dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd))
    if x.shape[0] == 0:
        return _zero_rows_backward(dy, x, w1, w2, b2, ln_weight)
    with _on(x):
        return load_backend(backend).grouped_residual_mlp_backward(
            dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd
        )


_FWD_OUT = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
_BWD_OUT = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@torch.library.custom_op("rpt_fast::residual_mlp_fwd", mutates_args=())
def residual_mlp_fwd(
    x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
    ln_weight: Tensor, ln_bias: Tensor, eps: float, backend: str,
) -> _FWD_OUT:
    return residual_mlp_forward_impl(x, w1, b1, w2, b2, ln_weight, ln_bias, eps, backend)


@torch.library.custom_op("rpt_fast::residual_mlp_bwd", mutates_args=())
def residual_mlp_bwd(
    dy: Tensor, x: Tensor, w1: Tensor, w2: Tensor, b2: Tensor, ln_weight: Tensor,
    h: Tensor, z: Tensor, mean: Tensor, rstd: Tensor, backend: str,
) -> _BWD_OUT:
    return residual_mlp_backward_impl(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd, backend)


@torch.library.custom_op("rpt_fast::grouped_residual_mlp_fwd", mutates_args=())
def grouped_residual_mlp_fwd(
    x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
    ln_weight: Tensor, ln_bias: Tensor, eps: float, backend: str,
) -> _FWD_OUT:
    return grouped_forward_impl(x, w1, b1, w2, b2, ln_weight, ln_bias, eps, backend)


@torch.library.custom_op("rpt_fast::grouped_residual_mlp_bwd", mutates_args=())
def grouped_residual_mlp_bwd(
    dy: Tensor, x: Tensor, w1: Tensor, w2: Tensor, b2: Tensor, ln_weight: Tensor,
    h: Tensor, z: Tensor, mean: Tensor, rstd: Tensor, backend: str,
) -> _BWD_OUT:
    return grouped_backward_impl(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd, backend)


def _fake_forward(x, m, backend, grouped):
    rows = x.shape[0]
    return (
        torch.empty_like(x),
        x.new_empty((rows, m)),
        _saved_z(x, rows, backend, grouped),
        x.new_empty((rows,), dtype=stats_dtype(x)),
        x.new_empty((rows,), dtype=stats_dtype(x)),
    )


@residual_mlp_fwd.register_fake
def _(x, w1, b1, w2, b2, ln_weight, ln_bias, eps, backend):
    return _fake_forward(x, w1.shape[0], backend, grouped=False)


@grouped_residual_mlp_fwd.register_fake
def _(x, w1, b1, w2, b2, ln_weight, ln_bias, eps, backend):
    return _fake_forward(x, w1.shape[1], backend, grouped=True)


@residual_mlp_bwd.register_fake
def _(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd, backend):
    return gradients_like(x, w1, w2, b2, ln_weight)


@grouped_residual_mlp_bwd.register_fake
def _(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd, backend):
    return gradients_like(x, w1, w2, b2, ln_weight)
