"""The implementations a kernel benchmark compares, as callables on the op's seven inputs.

eager: the pure-PyTorch reference under autograd (for the grouped op: its batched bmm form);
eager-loop (grouped only): one shared-op reference call per row; compile / compile-max:
torch.compile of the reference (default / max-autotune); triton, native: rpt_fast backends;
gemms (shared only): the op's six GEMMs alone, a bound rather than an implementation."""

from __future__ import annotations

import torch

import rpt_fast
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference

PROVIDERS = ("eager", "eager-loop", "compile", "compile-max", "triton", "native", "gemms")


class _GemmsOnly(torch.autograd.Function):
    """The shared op's two forward and four backward GEMMs through torch's BLAS, and nothing
    else (no ReLU, LayerNorm, bias or residual work). No implementation built on that BLAS runs
    the op faster, so eager's time over this one bounds what fusing can gain over eager."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, ln_weight, ln_bias):
        h = torch.addmm(b1, x, w1.t())
        ctx.save_for_backward(x, w1, w2, h)
        return h @ w2.t()

    @staticmethod
    def backward(ctx, dy):
        x, w1, w2, h = ctx.saved_tensors
        dh = dy @ w2
        return torch.addmm(dy, dh, w1), dh.t() @ x, None, dy.t() @ h, None, None, None


def _loop(x, *weights):
    """The official "separate" layout: one shared-op call per row with that row's MLP. unbind
    (whose backward is one stack) stands in for a ModuleList of separate parameters; indexing
    w[i] instead would zero-fill a full-size gradient per row."""
    rows = zip(x.unbind(0), *(w.unbind(0) for w in weights))
    return torch.stack([residual_mlp_reference(xi, *wi) for xi, *wi in rows])


def make(op: str, name: str, *, dynamic: bool | None = None):
    """The callable for provider ``name`` of ``op``; raises ValueError where it does not apply."""
    reference = grouped_residual_mlp_reference if op == "grouped" else residual_mlp_reference
    public = rpt_fast.grouped_residual_mlp if op == "grouped" else rpt_fast.residual_mlp
    if name == "eager":
        return lambda *t: public(*t, backend="eager")
    if name == "eager-loop":
        if op != "grouped":
            raise ValueError("eager-loop applies to the grouped op only")
        return _loop
    if name in ("compile", "compile-max"):
        mode = "max-autotune" if name == "compile-max" else None
        return torch.compile(reference, mode=mode, dynamic=dynamic)
    if name in ("triton", "native"):
        return lambda *t: public(*t, backend=name)
    if name == "gemms":
        if op != "shared":
            raise ValueError("gemms applies to the shared op only")
        return _GemmsOnly.apply
    raise ValueError(f"provider: expected one of {PROVIDERS}, got {name!r}")


def inputs(op: str, M: int, d: int, m: int, dtype, device, generator=None):
    """Fresh random inputs (never zeros) that all require grad, as in prompt tuning."""
    lead = (M,) if op == "grouped" else ()

    def rand(*shape, scale=1.0):
        t = torch.randn(*shape, generator=generator, dtype=torch.float32) * scale
        return t.to(device=device, dtype=dtype).requires_grad_(True)

    return (
        rand(M, d),
        rand(*lead, m, d, scale=d**-0.5),
        rand(*lead, m, scale=0.1),
        rand(*lead, d, m, scale=m**-0.5),
        rand(*lead, d, scale=0.1),
        rand(*lead, d),
        rand(*lead, d, scale=0.1),
    )


def mode_fn(fn, tensors, mode: str, dy):
    """A no-argument callable running ``mode`` ("fwd" | "bwd" | "full") of ``fn`` on ``tensors``."""
    if mode == "fwd":
        return lambda: fn(*tensors)
    if mode == "full":
        return lambda: torch.autograd.grad(fn(*tensors), tensors, dy, allow_unused=True)
    y = fn(*tensors)
    return lambda: torch.autograd.grad(y, tensors, dy, retain_graph=True, allow_unused=True)
