"""Property-based test: any input the ops accept gives the float64 reference's output and
gradients, within its dtype's tolerance, on every CPU backend.

Hypothesis draws the op (shared or grouped), the backend and dtype (Triton through the
interpreter in fp32/fp16, native in fp32/bf16/fp64, eager in fp32/fp64), shapes (rows from 0,
d and m from 1, odd sizes, leading dims of x), eps, and a layout for every argument
(contiguous, strided, transposed, expanded along its last or first dim, offset into its
storage). Gradients are taken at the arguments (the views). A failure prints the drawn case.
CI runs a fixed set of 250 cases (``derandomize``), ~30 s on 2 cores; ``RPT_FUZZ_EXAMPLES=N``
runs N fresh random cases instead.
"""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rpt_fast
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference

NAMES = ("x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias")
LAYOUTS = ("contiguous", "strided", "transposed", "expanded", "broadcast", "offset")
DTYPES = {  # the dtypes each backend serves on CPU (the interpreter's bf16 tl.dot is wrong)
    "triton": (torch.float32, torch.float16),
    "native": (torch.float32, torch.bfloat16, torch.float64),
    "eager": (torch.float32, torch.float64),  # eager is the reference: its layouts are tested
}
# Max |got - float64| / max(1, max |float64|), per unit of the LayerNorm's conditioning (see
# ``amplification``): a few roundings of the dtype, fp32 accumulation over <= 60 terms; native
# float64 keeps the LayerNorm statistics (mean, rstd) in fp32. 2.5x to 5x the largest error
# measured over 1400 random cases.
TOLERANCE = {torch.float64: 2e-6, torch.float32: 3e-5, torch.float16: 1.5e-2, torch.bfloat16: 6e-2}
_EXAMPLES = os.environ.get("RPT_FUZZ_EXAMPLES")


@dataclasses.dataclass(frozen=True)
class Case:
    grouped: bool
    backend: str
    dtype: torch.dtype
    x_shape: tuple  # (..., d); (n, d) for the grouped op
    m: int
    eps: float
    layouts: tuple  # one of LAYOUTS per argument, in NAMES order
    seed: int

    def shapes(self):
        *_, d = self.x_shape
        lead = self.x_shape[:1] if self.grouped else ()
        return [self.x_shape, (*lead, self.m, d), (*lead, self.m), (*lead, d, self.m),
                (*lead, d), (*lead, d), (*lead, d)]


@st.composite
def cases(draw):
    grouped = draw(st.booleans())
    backend = draw(st.sampled_from(sorted(DTYPES)))
    dtype = draw(st.sampled_from(DTYPES[backend]))
    d = draw(st.integers(1, 24))
    m = draw(st.integers(1, 12))
    if grouped:
        x_shape = (draw(st.integers(0, 5)), d)
    else:
        x_shape = (*draw(st.lists(st.integers(0, 4), max_size=3)), d)
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    layouts = tuple(draw(st.sampled_from(LAYOUTS)) for _ in NAMES)
    return Case(grouped, backend, dtype, x_shape, m, eps, layouts, draw(st.integers(0, 2**31 - 1)))


def _layout(kind, shape, make):
    """A leaf and a function viewing it as ``shape`` with layout ``kind``; ``make(shape)``
    draws the leaf's values."""
    *lead, n = shape
    if kind == "strided":
        return make((*lead, 2 * n)), lambda t: t[..., ::2]
    if kind == "transposed":
        if lead:
            return make((*lead[:-1], n, lead[-1])), lambda t: t.transpose(-1, -2)
        return make((n, 3)), lambda t: t[:, 1]
    if kind == "expanded":
        return make((*lead, 1)), lambda t: t.expand(shape)
    if kind == "broadcast" and lead:
        return make((1, *shape[1:])), lambda t: t.expand(shape)
    if kind == "offset":
        return make((math.prod(shape) + 1,)), lambda t: t[1:].view(shape)
    return make(shape), lambda t: t


def build(case):
    """Float64 leaves (the values rounded to the case's dtype) and their view functions."""
    gen = torch.Generator().manual_seed(case.seed)
    *_, d = case.x_shape
    scales = [(1.0, 0.0), (d**-0.5, 0.0), (0.1, 0.0), (case.m**-0.5, 0.0), (0.1, 0.0), (0.1, 1.0), (0.1, 0.0)]
    leaves, views = [], []
    for kind, shape, (scale, shift) in zip(case.layouts, case.shapes(), scales):
        def make(s, scale=scale, shift=shift):
            return (torch.randn(s, generator=gen, dtype=torch.float64) * scale + shift).to(case.dtype)

        leaf, view = _layout(kind, shape, make)
        leaves.append(leaf.double())
        views.append(view)
    return leaves, views


def amplification(x, w1, b1, w2, b2, eps):
    """Conditioning of the LayerNorm: rounding errors of z are multiplied by about
    max |z| / sqrt(var(z) + eps) in its output."""
    grouped = w1.dim() == 3
    h = (torch.einsum("nmd,nd->nm", w1, x) if grouped else x @ w1.T) + b1
    z = (torch.einsum("ndm,nm->nd", w2, h.clamp_min(0)) if grouped else h.clamp_min(0) @ w2.T) + b2
    if z.numel() == 0:
        return 1.0, h
    rstd = torch.rsqrt(z.var(-1, unbiased=False, keepdim=True) + eps)
    return max(1.0, (z.abs() * rstd).max().item()), h


def relative_error(got, want):
    if want.numel() == 0:
        return 0.0
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1.0)).item()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's fp16 overflow notes
@settings(
    max_examples=int(_EXAMPLES) if _EXAMPLES else 250,
    derandomize=_EXAMPLES is None,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
def test_matches_the_float64_reference(case):
    leaves, views = build(case)
    ref_leaves = [t.clone().requires_grad_() for t in leaves]
    ref_inputs = [view(t) for view, t in zip(views, ref_leaves)]  # gradients are the views'
    amp, pre = amplification(*ref_inputs[:5], case.eps)
    # ReLU's gradient jumps at 0: a pre-activation within rounding of 0 may take either side.
    assume(pre.numel() == 0 or pre.abs().min() > 1e-3)
    ref_op = grouped_residual_mlp_reference if case.grouped else residual_mlp_reference
    ref = ref_op(*ref_inputs, case.eps)
    dy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(case.seed + 1), dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, ref_inputs, dy)

    low = [view(t.to(case.dtype).requires_grad_()) for view, t in zip(views, leaves)]
    op = rpt_fast.grouped_residual_mlp if case.grouped else rpt_fast.residual_mlp
    out = op(*low, case.eps, backend=case.backend)
    assert out.shape == ref.shape and out.dtype == case.dtype
    grads = torch.autograd.grad(out, low, dy.to(case.dtype))
    tol = TOLERANCE[case.dtype] * amp
    assert relative_error(out, ref) < tol, ("y", relative_error(out, ref), tol)
    for name, got, want in zip(NAMES, grads, ref_grads):
        assert got.dtype == case.dtype and got.shape == want.shape, name
        assert relative_error(got, want) < tol, (f"d{name}", relative_error(got, want), tol)
