"""The public op's contract, independent of kernels: reference semantics, input checks,
backend choice, autocast and empty inputs."""

import pytest
import torch
import torch.nn.functional as F

import rpt_fast
from rpt_fast import BackendUnavailableError, residual_mlp
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference


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


def test_reference_matches_official_module_composition():
    x, w1, b1, w2, b2, g, beta = make_inputs(7, 16, 5)
    h = torch.relu(x @ w1.T + b1)
    z = h @ w2.T + b2
    mu = z.mean(-1, keepdim=True)
    var = ((z - mu) ** 2).mean(-1, keepdim=True)
    expected = (z - mu) / torch.sqrt(var + 1e-5) * g + beta + x
    torch.testing.assert_close(residual_mlp_reference(x, w1, b1, w2, b2, g, beta), expected)


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
def test_eager_backend_keeps_shape_and_matches_reference(lead):
    inputs = make_inputs(5, 8, 4, lead=lead)
    out = residual_mlp(*inputs, backend="eager")
    assert out.shape == inputs[0].shape and out.dtype == inputs[0].dtype
    torch.testing.assert_close(out, residual_mlp_reference(*inputs))


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


def test_autocast_runs_in_the_autocast_dtype_like_linear():
    inputs = make_inputs(3, 8, 4, dtype=torch.float32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = residual_mlp(*inputs)
        linear_out = F.linear(inputs[0], inputs[1], inputs[2])
    assert out.dtype == linear_out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in inputs)
    ref = residual_mlp_reference(*[t.detach().bfloat16().double() for t in inputs])
    torch.testing.assert_close(out.double(), ref, atol=0.1, rtol=0.05)


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


NAMES = ["x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias"]
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
