"""The public op's contract, independent of kernels: reference semantics, input checks,
backend choice, autocast and empty inputs."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rpt_fast
from rpt_fast import BackendUnavailableError, residual_mlp
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference


NAMES = ["x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias"]


def make_inputs(M, d, m, dtype=torch.float64, lead=(), requires_grad=False):
    x = torch.randn(*lead, M, d, dtype=dtype)
    w1 = torch.randn(m, d, dtype=dtype) / d**0.5
    b1 = torch.randn(m, dtype=dtype) * 0.1
    w2 = torch.randn(d, m, dtype=dtype) / m**0.5
    b2 = torch.randn(d, dtype=dtype) * 0.1
    g = 1 + 0.1 * torch.randn(d, dtype=dtype)
    beta = 0.1 * torch.randn(d, dtype=dtype)
    tensors = [x, w1, b1, w2, b2, g, beta]
    return [t.requires_grad_(requires_grad) for t in tensors]


def by_hand(x, w1, b1, w2, b2, g, beta, eps=1e-5):
    """The encoder written out with matmuls and sums, independent of the reference's
    F.linear / F.layer_norm: what the eager backend (which is the reference) is checked against."""
    h = torch.clamp_min(x @ w1.T + b1, 0.0)
    z = h @ w2.T + b2
    mu = z.sum(-1, keepdim=True) / z.shape[-1]
    var = ((z - mu) ** 2).sum(-1, keepdim=True) / z.shape[-1]
    return (z - mu) / torch.sqrt(var + eps) * g + beta + x


def test_reference_matches_official_module_composition():
    inputs = make_inputs(7, 16, 5)
    torch.testing.assert_close(residual_mlp_reference(*inputs), by_hand(*inputs))


def test_reference_gradcheck_float64():
    inputs = make_inputs(4, 6, 3, requires_grad=True)
    assert torch.autograd.gradcheck(residual_mlp_reference, (*inputs, 1e-5))


def test_grouped_reference_is_a_loop_of_the_shared_reference():
    n, d, m = 3, 8, 5
    x = torch.randn(n, d, dtype=torch.float64)
    w1, b1 = torch.randn(n, m, d, dtype=torch.float64), torch.randn(n, m, dtype=torch.float64)
    w2, b2 = torch.randn(n, d, m, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    g, beta = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    got = grouped_residual_mlp_reference(x, w1, b1, w2, b2, g, beta)
    for i in range(n):
        row = residual_mlp_reference(x[i : i + 1], w1[i], b1[i], w2[i], b2[i], g[i], beta[i])
        torch.testing.assert_close(got[i : i + 1], row)


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
def test_eager_backend_keeps_shape_and_matches_the_formula(lead):
    inputs = make_inputs(5, 8, 4, lead=lead, requires_grad=True)
    out = residual_mlp(*inputs, backend="eager")
    assert out.shape == inputs[0].shape and out.dtype == inputs[0].dtype
    expected = by_hand(*inputs)
    torch.testing.assert_close(out, expected)
    dy = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, dy)
    for name, got, want in zip(NAMES, grads, torch.autograd.grad(expected, inputs, dy)):
        torch.testing.assert_close(got, want, msg=name)


def test_auto_never_fails_where_eager_works():
    inputs = make_inputs(3, 8, 4, dtype=torch.float64)
    torch.testing.assert_close(residual_mlp(*inputs), residual_mlp(*inputs, backend="eager"))


@pytest.mark.parametrize("backend", ["eager", "native", "triton"])
def test_zero_rows_give_empty_output_and_zero_weight_grads(backend):
    x, *weights = make_inputs(0, 8, 4, dtype=torch.float32, requires_grad=True)
    out = residual_mlp(x, *weights, backend=backend)
    assert out.shape == (0, 8)
    out.sum().backward()
    for w in weights:
        assert w.grad is not None and torch.count_nonzero(w.grad) == 0


def test_nan_in_nan_out():
    inputs = make_inputs(3, 8, 4)
    inputs[0][1, 2] = float("nan")
    out = residual_mlp(*inputs)
    assert torch.isnan(out[1]).all() and not torch.isnan(out[0]).any()


def _max_relative_error(got, want):
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1.0)).item()


@pytest.mark.parametrize("backend", ["eager", "native"])  # the interpreter has no bf16 tl.dot
def test_autocast_runs_in_the_autocast_dtype_like_linear(backend):
    inputs = make_inputs(6, 24, 10, dtype=torch.float32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = residual_mlp(*inputs, backend=backend)
        linear_out = F.linear(inputs[0], inputs[1], inputs[2])
    assert out.dtype == linear_out.dtype == torch.bfloat16
    dy = torch.randn(out.shape, dtype=torch.bfloat16)
    grads = torch.autograd.grad(out, inputs, dy)
    # float64 on the bf16-rounded inputs autocast gave the op; grads flow back to the fp32 leaves.
    ref_inputs = [t.detach().bfloat16().double().requires_grad_() for t in inputs]
    ref = residual_mlp_reference(*ref_inputs)
    ref_grads = torch.autograd.grad(ref, ref_inputs, dy.double())
    assert _max_relative_error(out, ref) < 1e-2
    for name, got, want in zip(NAMES, grads, ref_grads):
        assert got.dtype == torch.float32, name
        assert _max_relative_error(got, want) < 2e-2, name


def test_autocast_accepts_mixed_input_dtypes_like_linear():
    x, *weights = make_inputs(3, 8, 4, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = residual_mlp(x.bfloat16(), *weights)
    assert out.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- bad inputs
def _bad(index, value):
    inputs = make_inputs(3, 8, 4, dtype=torch.float32)
    inputs[index] = value
    return inputs


BAD_SHAPES = {
    1: torch.randn(4, 9),  # w1 with the wrong d
    2: torch.randn(5),  # b1 not (m,)
    3: torch.randn(8, 5),  # w2 with the wrong m
    4: torch.randn(9),  # b2 not (d,)
    5: torch.randn(7),  # ln_weight not (d,)
    6: torch.randn(8, 1),  # ln_bias 2-D
}


@pytest.mark.parametrize("index", sorted(BAD_SHAPES))
def test_wrong_shape_names_the_argument_and_both_shapes(index):
    inputs = _bad(index, BAD_SHAPES[index])
    with pytest.raises(ValueError, match=rf"^{NAMES[index]}: expected shape .* got \({BAD_SHAPES[index].shape[0]}"):
        residual_mlp(*inputs)


@pytest.mark.parametrize("index", range(1, 7))
def test_wrong_dtype_names_the_argument_and_both_dtypes(index):
    inputs = make_inputs(3, 8, 4, dtype=torch.float32)
    inputs[index] = inputs[index].half()
    with pytest.raises(TypeError, match=rf"^{NAMES[index]}: expected dtype torch.float32 .* got torch.float16"):
        residual_mlp(*inputs)


@pytest.mark.parametrize("index", range(1, 7))
def test_wrong_device_names_the_argument_and_both_devices(index):
    inputs = make_inputs(3, 8, 4, dtype=torch.float32)
    inputs[index] = inputs[index].to("meta")
    with pytest.raises(ValueError, match=rf"^{NAMES[index]}: expected device cpu .* got meta"):
        residual_mlp(*inputs)


def test_released_zero3_weight_is_reported_as_such():
    inputs = _bad(1, torch.empty(0))
    with pytest.raises(ValueError, match="w1: .*ZeRO-3"):
        residual_mlp(*inputs)


@pytest.mark.parametrize(
    "x, error, pattern",
    [
        ("not a tensor", TypeError, "x: expected a torch.Tensor, got str"),
        (torch.ones(3, 8, dtype=torch.int64), TypeError, "x: expected dtype in .* got torch.int64"),
        (torch.tensor(1.0), ValueError, "x: expected at least 1 dimension"),
    ],
)
def test_bad_x(x, error, pattern):
    inputs = _bad(0, x)
    with pytest.raises(error, match=pattern):
        residual_mlp(*inputs)


def test_x_of_the_wrong_width_is_named_not_w1():
    # every parameter agrees on d = 8: the input is the odd one out, so the error names x
    with pytest.raises(ValueError, match=r"^x: expected a last dimension d = 8 .* got 9 \(shape \(2, 3, 9\)\)"):
        residual_mlp(*_bad(0, torch.randn(2, 3, 9)))
    with pytest.raises(ValueError, match=r"^x: expected a last dimension d = 8 .* got 9"):
        rpt_fast.FusedResidualMLP(8, 4)(torch.randn(3, 9))
    n, d, m = 3, 8, 4
    grouped = [torch.randn(n, m, d), torch.randn(n, m), torch.randn(n, d, m), torch.randn(n, d), torch.randn(n, d),
               torch.randn(n, d)]
    with pytest.raises(ValueError, match=r"^x: expected a last dimension d = 8 .* got 9"):
        rpt_fast.grouped_residual_mlp(torch.randn(n, 9), *grouped)


def test_non_tensor_weight_is_a_type_error():
    with pytest.raises(TypeError, match="b2: expected a torch.Tensor, got list"):
        residual_mlp(*_bad(4, [0.0] * 8))


@pytest.mark.parametrize("eps, error", [(0.0, ValueError), (-1.0, ValueError), ("1e-5", TypeError)])
def test_bad_eps(eps, error):
    with pytest.raises(error, match="eps: expected"):
        residual_mlp(*make_inputs(3, 8, 4), eps)


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError, match=r"backend: expected one of \('auto', 'triton', 'native', 'eager'\), got 'cuda'"):
        residual_mlp(*make_inputs(3, 8, 4), backend="cuda")


def test_triton_refuses_float64_with_a_reason():
    with pytest.raises(BackendUnavailableError, match="float64"):
        residual_mlp(*make_inputs(3, 8, 4), backend="triton")


def test_triton_refuses_rows_wider_than_its_registers():
    with pytest.raises(BackendUnavailableError, match="d <= 8192, got d=8193"):
        residual_mlp(*make_inputs(1, 8193, 1, dtype=torch.float32), backend="triton")


def test_grouped_bad_shape_names_the_argument():
    n, d, m = 3, 8, 4
    x = torch.randn(n, d)
    good = [torch.randn(n, m, d), torch.randn(n, m), torch.randn(n, d, m), torch.randn(n, d),
            torch.randn(n, d), torch.randn(n, d)]
    bad = list(good)
    bad[1] = torch.randn(n + 1, m)
    with pytest.raises(ValueError, match=r"^b1: expected shape \(3, 4\), got \(4, 4\)"):
        rpt_fast.grouped_residual_mlp(x, *bad)
    with pytest.raises(ValueError, match="x: expected a 2-D tensor"):
        rpt_fast.grouped_residual_mlp(x[None], *good)


# ----------------------------------------------------------------------------- strided inputs
def _view_of(kind, shape, scale, shift):
    """A fresh float32 leaf and a function that makes a ``shape`` view of it of this ``kind``."""
    *lead, n = shape
    if kind == "strided":  # every other element of a twice-as-long last dim
        base, view = torch.randn(*lead, 2 * n), lambda t: t[..., ::2]
    elif kind == "transposed":  # a transposed matrix, or a column of one for 1-D shapes
        if lead:
            base, view = torch.randn(*lead[:-1], n, lead[-1]), lambda t: t.transpose(-1, -2)
        else:
            base, view = torch.randn(n, 3), lambda t: t[:, 1]
    elif kind == "expanded":  # stride 0 along the last dim: one value broadcast over it
        base, view = torch.randn(*lead, 1), lambda t: t.expand(shape)
    elif kind == "offset":  # contiguous but starting one element into its storage
        base, view = torch.randn(math.prod(shape) + 1), lambda t: t[1:].view(shape)
    else:
        raise ValueError(kind)
    return (base * scale + shift).requires_grad_(), view


def _strided_case(kind, grouped, M=5, d=13, m=7):
    lead = (M,) if grouped else ()
    specs = [  # (shape, scale, shift) of x, w1, b1, w2, b2, ln_weight, ln_bias
        ((M, d), 1.0, 0.0), ((*lead, m, d), d**-0.5, 0.0), ((*lead, m), 0.1, 0.0),
        ((*lead, d, m), m**-0.5, 0.0), ((*lead, d), 0.1, 0.0), ((*lead, d), 0.1, 1.0),
        ((*lead, d), 0.1, 0.0),
    ]
    return [_view_of(kind, *spec) for spec in specs]


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
@pytest.mark.parametrize("kind", ["strided", "transposed", "expanded", "offset"])
@pytest.mark.parametrize("backend", ["eager", "native", "triton"])
def test_every_argument_may_be_a_view(backend, kind, grouped):
    """Views of every argument give the float64 reference's output, and their gradients reach
    the tensors they view."""
    op = rpt_fast.grouped_residual_mlp if grouped else residual_mlp
    ref_op = grouped_residual_mlp_reference if grouped else residual_mlp_reference
    case = _strided_case(kind, grouped)
    leaves = [leaf for leaf, _ in case]
    views = [view(leaf) for leaf, view in case]
    assert all(not v.is_contiguous() for v in views) or kind == "offset"
    out = op(*views, backend=backend)
    dy = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, dy)
    ref_leaves = [leaf.detach().double().requires_grad_() for leaf in leaves]
    ref = ref_op(*[view(leaf) for leaf, (_, view) in zip(ref_leaves, case)])
    ref_grads = torch.autograd.grad(ref, ref_leaves, dy.double())
    assert _max_relative_error(out, ref) < 1e-5
    for name, got, want in zip(NAMES, grads, ref_grads):
        assert got.shape == want.shape and _max_relative_error(got, want) < 1e-5, name


@pytest.mark.parametrize("backend", ["eager", "native", "triton"])
def test_non_contiguous_leaf_parameters_get_their_gradients(backend):
    """Parameters that are themselves transposed (tied weights, say) get .grad in place."""
    x, w1, b1, w2, b2, g, beta = make_inputs(4, 12, 6, dtype=torch.float32)
    w1 = nn.Parameter(w1.T.contiguous().T)
    w2 = nn.Parameter(w2.T.contiguous().T)
    params = [w1, b1.requires_grad_(), w2, b2.requires_grad_(), g.requires_grad_(), beta.requires_grad_()]
    assert not w1.is_contiguous() and not w2.is_contiguous()
    out = residual_mlp(x, *params, backend=backend)
    dy = torch.randn_like(out)
    out.backward(dy)
    ref_params = [p.detach().double().requires_grad_() for p in params]
    residual_mlp_reference(x.double(), *ref_params).backward(dy.double())
    for name, p, r in zip(NAMES[1:], params, ref_params):
        assert _max_relative_error(p.grad, r.grad) < 1e-5, name


@pytest.mark.parametrize("backend", ["native", "triton"])
def test_custom_op_called_directly_refuses_views(backend):
    """The registered ops index their inputs as contiguous: a direct call with a view is refused
    with the argument's name, never read wrongly (the public functions copy views first)."""
    d, m = 8, 4
    x, b1, b2, g, b = torch.randn(3, d), torch.randn(m), torch.randn(d), torch.randn(d), torch.randn(d)
    w1, w2 = torch.randn(d, m).t(), torch.randn(d, m)
    with pytest.raises(ValueError, match=r"w1: the rpt_fast custom ops take contiguous tensors"):
        torch.ops.rpt_fast.residual_mlp_fwd(x, w1, b1, w2, b2, g, b, 1e-5, backend)
