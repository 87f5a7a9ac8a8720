"""The native (C++) backend against the float64 reference: values and all 7 gradients of the
shared and grouped ops, gradcheck, torch.library.opcheck, and bad calls into the raw C++ ops."""

from __future__ import annotations

import pytest
import torch

import rpt_fast
from rpt_fast.ops import native
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference

# Max |native - reference| allowed, relative to max(1, max |reference|) of each output; the
# reference runs in float64 on the inputs rounded to the tested dtype. float64 keeps float64 row
# statistics, so it matches to float64 rounding; bfloat16 must also stay within twice the error
# of the eager backend in bfloat16 (both round h, z, dz and dh to bfloat16).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 1.5e-1}
BF16_FLOOR = 1e-2
NAMES = ("y", "dx", "dw1", "db1", "dw2", "db2", "dln_weight", "dln_bias")


@pytest.fixture(scope="module", autouse=True)
def _loaded():
    reason = native.unavailable_reason(torch.empty(1))
    assert reason is None, reason


def make_inputs(rows, d, m, groups=None, dtype=torch.float64):
    """x (rows, d) and the six parameters; grouped when ``groups`` (= rows) is given."""
    lead = () if groups is None else (groups,)
    x = torch.randn(rows, d, dtype=dtype)
    w1 = torch.randn(*lead, m, d, dtype=dtype) / d**0.5
    b1 = 0.1 * torch.randn(*lead, m, dtype=dtype)
    w2 = torch.randn(*lead, d, m, dtype=dtype) / m**0.5
    b2 = 0.1 * torch.randn(*lead, d, dtype=dtype)
    ln_weight = 1 + 0.1 * torch.randn(*lead, d, dtype=dtype)
    ln_bias = 0.1 * torch.randn(*lead, d, dtype=dtype)
    return [x, w1, b1, w2, b2, ln_weight, ln_bias]


def rounded(tensors, dtype):
    """The float64 values the tested dtype can hold."""
    return [t.to(dtype).double() for t in tensors]


def value_and_grads(fn, tensors, dy, dtype, **kwargs):
    leaves = [t.detach().to(dtype).requires_grad_() for t in tensors]
    y = fn(*leaves, **kwargs)
    y.backward(dy.to(dtype))
    return [y.detach().double()] + [t.grad.double() for t in leaves]


def relative_error(o, r):
    return (o - r).abs().max().item() / max(1.0, r.abs().max().item())


def assert_matches(out, ref, dtype, eager=None):
    """``eager``: the eager backend's outputs in ``dtype``, which bound bfloat16 errors."""
    for i, (name, o, r) in enumerate(zip(NAMES, out, ref)):
        assert o.shape == r.shape, name
        err = relative_error(o, r)
        assert err <= TOLERANCE[dtype], f"{name}: error {err:.3g} > {TOLERANCE[dtype]} ({dtype})"
        if eager is not None:
            bound = max(BF16_FLOOR, 2 * relative_error(eager[i], r))
            assert err <= bound, f"{name}: error {err:.3g} > {bound:.3g}, twice eager's"


SHARED_SHAPES = [  # (M, d, m): every value of each axis at least once
    (1, 8, 1), (7, 64, 5), (100, 768, 64), (1000, 1000, 800),
    (1, 1000, 800), (7, 768, 1), (1000, 8, 5), (100, 64, 800),
]
DTYPES = [torch.float64, torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHARED_SHAPES, ids=str)
def test_shared_matches_reference(shape, dtype, poisoned):
    rows, d, m = shape
    tensors = rounded(make_inputs(rows, d, m), dtype)
    dy = rounded([torch.randn(rows, d, dtype=torch.float64)], dtype)[0]
    ref = value_and_grads(residual_mlp_reference, tensors, dy, torch.float64)
    out = value_and_grads(rpt_fast.residual_mlp, tensors, dy, dtype, backend="native")
    eager = None
    if dtype == torch.bfloat16:
        eager = value_and_grads(rpt_fast.residual_mlp, tensors, dy, dtype, backend="eager")
    assert_matches(out, ref, dtype, eager)


GROUPED_SHAPES = [(1, 8, 1), (3, 64, 5), (10, 768, 64), (100, 64, 800), (3, 1000, 800)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GROUPED_SHAPES, ids=str)
def test_grouped_matches_reference(shape, dtype, poisoned):
    n, d, m = shape
    tensors = rounded(make_inputs(n, d, m, groups=n), dtype)
    dy = rounded([torch.randn(n, d, dtype=torch.float64)], dtype)[0]
    ref = value_and_grads(grouped_residual_mlp_reference, tensors, dy, torch.float64)
    out = value_and_grads(rpt_fast.grouped_residual_mlp, tensors, dy, dtype, backend="native")
    eager = None
    if dtype == torch.bfloat16:
        eager = value_and_grads(rpt_fast.grouped_residual_mlp, tensors, dy, dtype, backend="eager")
    assert_matches(out, ref, dtype, eager)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_statistics_dtype(grouped, dtype):
    """float64 keeps float64 LayerNorm statistics (float32 ones cost float64 gradients ~1e-7)."""
    fwd_args, _ = raw_args(grouped, dtype=dtype)
    prefix = "grouped_" if grouped else ""
    *_, mean, rstd = getattr(torch.ops.rpt_fast_native, f"{prefix}residual_mlp_forward")(*fwd_args)
    expected = torch.float64 if dtype == torch.float64 else torch.float32
    assert mean.dtype == rstd.dtype == expected


def test_3d_and_non_contiguous_inputs(poisoned):
    """A 3-D x, a transposed x and weights that are transposed views or strided slices."""
    d, m = 48, 20
    x = torch.randn(2, d, 5).transpose(1, 2)  # (2, 5, d), non-contiguous
    w1 = torch.randn(d, m).t() / d**0.5  # (m, d) transposed view
    b1 = 0.1 * torch.randn(2 * m)[::2]  # strided slice
    w2 = torch.randn(d, 2 * m)[:, ::2] / m**0.5  # (d, m) strided slice
    b2, ln_weight, ln_bias = (torch.randn(d) * s + o for s, o in ((0.1, 0), (0.1, 1), (0.1, 0)))
    tensors = [x, w1, b1, w2, b2, ln_weight, ln_bias]
    dy = torch.randn(2, 5, d)
    ref = value_and_grads(residual_mlp_reference, tensors, dy.double(), torch.float64)
    out = value_and_grads(rpt_fast.residual_mlp, tensors, dy, torch.float32, backend="native")
    assert_matches(out, ref, torch.float32)


def test_grouped_non_contiguous_weights(poisoned):
    n, d, m = 4, 16, 6
    tensors = make_inputs(n, d, m, groups=n)
    tensors[1] = tensors[1].transpose(1, 2).contiguous().transpose(1, 2)  # (n, m, d) view
    tensors[5] = tensors[5].t().contiguous().t()  # ln_weight (n, d) view
    dy = torch.randn(n, d, dtype=torch.float64)
    ref = value_and_grads(grouped_residual_mlp_reference, tensors, dy, torch.float64)
    out = value_and_grads(rpt_fast.grouped_residual_mlp, tensors, dy, torch.float32,
                          backend="native")
    assert_matches(out, ref, torch.float32)


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_gradcheck_float64(grouped):
    n, d, m = 3, 6, 4
    tensors = [t.requires_grad_() for t in make_inputs(n, d, m, groups=n if grouped else None)]
    fn = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    assert torch.autograd.gradcheck(lambda *t: fn(*t, backend="native"), tensors)


@pytest.mark.parametrize("eps", [1e-2, 1e-5, None], ids=["eps=1e-2", "eps=1e-5", "default"])
@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_eps(grouped, eps, poisoned):
    """eps reaches the kernels (at 1e-2 a dropped eps costs ~0.5); the default is 1e-5.
    z is scaled down (var(z) ~ 1e-2) so that eps moves every output and gradient."""
    n, d, m = 6, 32, 16
    tensors = make_inputs(n, d, m, groups=n if grouped else None)
    tensors[3] = tensors[3] * 0.1
    dy = torch.randn(n, d, dtype=torch.float64)
    fn = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    ref_fn = grouped_residual_mlp_reference if grouped else residual_mlp_reference
    kwargs = {} if eps is None else {"eps": eps}
    ref = value_and_grads(ref_fn, tensors, dy, torch.float64, eps=1e-5 if eps is None else eps)
    out = value_and_grads(fn, tensors, dy, torch.float64, backend="native", **kwargs)
    assert_matches(out, ref, torch.float64)
    other = value_and_grads(ref_fn, tensors, dy, torch.float64, eps=1e-2 if eps != 1e-2 else 1e-5)
    assert relative_error(out[0], other[0]) > 1e-3  # the eps values are told apart


def test_deterministic():
    tensors = make_inputs(300, 64, 32, dtype=torch.float32)
    dy = torch.randn(300, 64)
    first = value_and_grads(rpt_fast.residual_mlp, tensors, dy, torch.float32, backend="native")
    second = value_and_grads(rpt_fast.residual_mlp, tensors, dy, torch.float32, backend="native")
    for name, a, b in zip(NAMES, first, second):
        assert torch.equal(a, b), name


THREAD_SHAPES = [  # (grouped, rows, d, m): one-tile and multi-tile GEMMs (600 rows, d 520: two
    # output tiles of h and dw1), every reduction chunking; (100, 256, 64) float64 is where
    # torch's own multi-threaded GEMM gives different bits for 1 and 2 threads
    (False, 7, 96, 40), (False, 100, 256, 64), (False, 1000, 64, 48), (False, 600, 520, 48),
    (True, 5, 256, 96),
    (False, 10, 768, 400),  # skinny tiles of dh and dx sharing their regions with dw2 and dw1
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", THREAD_SHAPES, ids=str)
def test_bitwise_identical_across_thread_counts(case, dtype):
    """Outputs and all gradients are bitwise the same with 1, 2 and 3 threads: no reduction
    order may depend on how the work is split between threads."""
    grouped, rows, d, m = case
    tensors = make_inputs(rows, d, m, groups=rows if grouped else None, dtype=dtype)
    dy = torch.randn(rows, d, dtype=dtype)
    fn = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    before = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results[threads] = value_and_grads(fn, tensors, dy, dtype, backend="native")
    finally:
        torch.set_num_threads(before)
    for threads in (2, 3):
        for name, a, b in zip(NAMES, results[1], results[threads]):
            assert torch.equal(a, b), f"{name}: 1 vs {threads} threads differ"


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_autograd_runs_in_cpp(grouped, poisoned):
    """Outside torch.compile the native backend's gradient is the C++ Function's
    (csrc/autograd.cpp), with the reference's values (checked above through the same path)."""
    n, d, m = 4, 16, 8
    inputs = make_inputs(n, d, m, groups=n if grouped else None)
    tensors = [t.float().requires_grad_() for t in inputs]
    fn = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    y = fn(*tensors, backend="native")
    assert "ResidualMLPFunction" in y.grad_fn.name(), y.grad_fn.name()


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_inference_mode_runs_the_forward(grouped, poisoned):
    """Below autograd (inference mode) the ops' CPU kernel alone serves the call."""
    n, d, m = 4, 16, 8
    tensors = make_inputs(n, d, m, groups=n if grouped else None)
    fn = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    ref_fn = grouped_residual_mlp_reference if grouped else residual_mlp_reference
    with torch.inference_mode():
        y = fn(*tensors, backend="native")
    assert not y.requires_grad
    torch.testing.assert_close(y, ref_fn(*tensors), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_weight_released_before_backward_is_named(grouped):
    """ZeRO-3 releases weights after the forward: one not gathered again fails the backward
    with an error naming it."""
    n, d, m = 4, 16, 8
    tensors = [t.requires_grad_() for t in make_inputs(n, d, m, groups=n if grouped else None)]
    fn = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    y = fn(*tensors, backend="native")
    tensors[3].data = torch.empty(0, dtype=tensors[3].dtype)  # w2, as DeepSpeed releases it
    with pytest.raises(RuntimeError, match=r"w2: expected shape .* ZeRO-3 parameter"):
        y.sum().backward()


def raw_args(grouped, rows=5, d=12, m=7, dtype=torch.float32):
    """Arguments of the raw forward and backward ops, from a real forward."""
    fwd_args = make_inputs(rows, d, m, groups=rows if grouped else None, dtype=dtype) + [1e-5]
    prefix = "grouped_" if grouped else ""
    y, h, z, mean, rstd = getattr(torch.ops.rpt_fast_native, f"{prefix}residual_mlp_forward")(
        *fwd_args
    )
    x, w1, _, w2, b2, ln_weight, _, _ = fwd_args
    assert z.shape == x.shape and z.dtype == x.dtype  # native keeps z - b2 for the backward
    bwd_args = [torch.randn_like(y), x, w1, w2, b2, ln_weight, h, z, mean, rstd]
    return fwd_args, bwd_args


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_opcheck(grouped):
    prefix = "grouped_" if grouped else ""
    fwd_args, bwd_args = raw_args(grouped)
    fwd = getattr(torch.ops.rpt_fast_native, f"{prefix}residual_mlp_forward")
    bwd = getattr(torch.ops.rpt_fast_native, f"{prefix}residual_mlp_backward")
    torch.library.opcheck(fwd, fwd_args)
    torch.library.opcheck(bwd, bwd_args)
    # Weights as transposed views: the gradients' layout must match the fake one.
    w1_t = bwd_args[2].transpose(-1, -2).contiguous().transpose(-1, -2)
    torch.library.opcheck(bwd, bwd_args[:2] + [w1_t] + bwd_args[3:])


FWD_NAMES = ("x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias")
BWD_NAMES = ("dy", "x", "w1", "w2", "b2", "ln_weight", "h", "z", "mean", "rstd")


def _bad_calls(grouped):
    """(which op, argument index, bad value, expected message) for each probe."""
    fwd, bwd = raw_args(grouped)
    x, w1 = fwd[0], fwd[1]
    rows, d = x.shape
    probes = [
        ("fwd", 0, x.half(), "x: expected dtype"),
        ("fwd", 0, x.t().contiguous().t(), "x: expected a contiguous"),
        ("fwd", 0, x[0], "x: expected a 2-D"),
        ("fwd", 1, w1.double(), "w1: expected dtype"),
        ("fwd", 1, w1[..., : d - 1], "w1: expected shape"),
        ("fwd", 2, fwd[2][..., :-1], "b1: expected shape"),
        ("fwd", 3, fwd[3][..., :-1, :], "w2: expected shape"),
        ("fwd", 4, fwd[4][..., :-1], "b2: expected shape"),
        ("fwd", 6, fwd[6].double(), "ln_bias: expected dtype"),
        ("fwd", 7, 0.0, "eps: expected a positive"),
        ("fwd", 1, w1.to("meta"), "w1: expected device"),
        ("bwd", 0, bwd[0][:-1], "dy: expected shape"),
        ("bwd", 0, torch.randn(d, rows).t(), "dy: expected a contiguous"),
        ("bwd", 6, bwd[6][:, :-1], "h: expected shape"),
        ("bwd", 6, bwd[6].t().contiguous().t(), "h: expected a contiguous"),
        ("bwd", 7, bwd[7][:, :-1], "z: expected shape"),
        ("bwd", 7, bwd[7].t().contiguous().t(), "z: expected a contiguous"),
        ("bwd", 7, bwd[7].double(), "z: expected dtype"),
        ("bwd", 8, bwd[8][:-1], "mean: expected shape"),
        ("bwd", 9, bwd[9].double(), "rstd: expected dtype Float"),
        ("bwd", 3, bwd[3].to("meta"), "w2: expected device"),
    ]
    for which, index, value, message in probes:
        args = list(fwd if which == "fwd" else bwd)
        args[index] = value
        yield which, args, message


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_bad_raw_calls_raise(grouped):
    prefix = "grouped_" if grouped else ""
    ops = {
        "fwd": getattr(torch.ops.rpt_fast_native, f"{prefix}residual_mlp_forward"),
        "bwd": getattr(torch.ops.rpt_fast_native, f"{prefix}residual_mlp_backward"),
    }
    for which, args, message in _bad_calls(grouped):
        with pytest.raises(RuntimeError, match=message):
            ops[which](*args)


def test_unavailable_reasons():
    assert "float16" in native.unavailable_reason(torch.empty(1, dtype=torch.float16))
    assert "CPU" in native.unavailable_reason(torch.empty(1, device="meta"))
    assert native.unavailable_reason(torch.empty(1, dtype=torch.bfloat16)) is None


def test_auto_uses_native_and_float16_falls_back(monkeypatch):
    tensors = make_inputs(3, 8, 4, dtype=torch.float32)
    calls = []
    original = native.residual_mlp
    monkeypatch.setattr(native, "residual_mlp", lambda *a: calls.append(1) or original(*a))
    rpt_fast.residual_mlp(*tensors)
    assert calls == [1]
    y = rpt_fast.residual_mlp(*[t.half() for t in tensors])
    assert y.dtype == torch.float16 and calls == [1]
    with pytest.raises(rpt_fast.BackendUnavailableError, match="float16"):
        rpt_fast.residual_mlp(*[t.half() for t in tensors], backend="native")


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_raw_ops_take_inputs_that_require_grad(grouped):
    """The kernels' inner ATen calls (out= GEMMs) must not go through autograd."""
    prefix = "grouped_" if grouped else ""
    fwd_args, bwd_args = raw_args(grouped)
    fwd_args = [a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in fwd_args]
    y = getattr(torch.ops.rpt_fast_native, f"{prefix}residual_mlp_forward")(*fwd_args)[0]
    ref = (grouped_residual_mlp_reference if grouped else residual_mlp_reference)(*fwd_args)
    torch.testing.assert_close(y, ref.detach())
    bwd_args[1:6] = [a.detach().requires_grad_() for a in bwd_args[1:6]]
    getattr(torch.ops.rpt_fast_native, f"{prefix}residual_mlp_backward")(*bwd_args)
