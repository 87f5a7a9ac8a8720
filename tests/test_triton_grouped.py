"""The grouped ("separate") op's Triton kernels against the float64 reference, through the
interpreter on CPU (fp32/fp16; bf16 through the raw launchers): the value and all 7 gradients
with NaN-poisoned allocations, the launcher contract, strided weights, determinism, NaN
propagation, the registered ops' fake shapes, bad inputs and the reference itself.
The ahead-of-time compile of every shipped config (sm_80, sm_90) is in test_aot_compile.py."""

from __future__ import annotations

import pytest
import torch
from grouped_op_cases import (
    NAMES,
    TOLERANCE,
    check_against_reference,
    make_inputs,
    relative_error,
)
from shared_op_cases import unaligned

from rpt_fast import BackendUnavailableError, _library, grouped_residual_mlp
from rpt_fast.ops import triton_backend, triton_grouped
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference

# These run the kernels on CPU tensors through the interpreter (conftest sets TRITON_INTERPRET
# where no GPU is present); tests/test_gpu_kernels.py covers the device.
interpreted = pytest.mark.skipif(
    triton_backend.unavailable_reason(torch.empty(1)) is not None,
    reason="the Triton interpreter is off (TRITON_INTERPRET unset)",
)

# (n, d, m, dtype): n in {1, 3, 10, 100}, d in {8, 64, 768, 1000}, m in {1, 5, 64, 800}.
CASES = [
    (1, 8, 1, torch.float32),
    (3, 64, 5, torch.float16),
    (10, 64, 5, torch.float32),
    (100, 8, 5, torch.float16),
    (1, 768, 800, torch.float16),
    (3, 1000, 64, torch.float32),
]


@interpreted
@pytest.mark.parametrize("n, d, m, dtype", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_matches_float64_reference(n, d, m, dtype, poisoned):
    check_against_reference(make_inputs(n, d, m), dtype)


@interpreted
def test_strided_weights_match_the_reference(poisoned):
    n, d, m = 3, 40, 24
    x, w1, b1, w2, b2, g, beta = make_inputs(n, d, m, torch.float32)
    strided = [
        x,
        w1.transpose(1, 2).contiguous().transpose(1, 2),  # (n, m, d) stored as (n, d, m)
        torch.stack([b1, b1], dim=-1)[..., 0],  # stride 2 along m
        w2.permute(2, 0, 1).contiguous().permute(1, 2, 0),  # group dimension innermost
        b2.t().contiguous().t(),
        g.t().contiguous().t(),
        torch.stack([beta, beta], dim=-1)[..., 1],
    ]
    assert not any(t.is_contiguous() for t in strided[1:])
    check_against_reference(strided, torch.float32)  # the op passes contiguous copies


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_launchers_honour_the_backend_contract(dtype, poisoned):
    """Raw launchers: h = ReLU(w1 x + b1) in x's dtype, fp32 mean/rstd of z, and all 7 grads.
    bfloat16 runs here too: these kernels use no tl.dot, the interpreter's bfloat16 weak spot."""
    tensors = [t.to(dtype) for t in make_inputs(3, 48, 20)]
    x, w1, b1, w2, b2, g, beta = tensors
    y, h, z, mean, rstd = triton_grouped.grouped_residual_mlp_forward(*tensors, 1e-3)
    params = [t.double().requires_grad_() for t in tensors]
    xd, w1d, b1d, w2d, b2d = params[:5]
    h_ref = torch.relu(torch.einsum("nmd,nd->nm", w1d, xd) + b1d)
    z_ref = torch.einsum("ndm,nm->nd", w2d, h_ref.to(dtype).double()) + b2d
    tol = TOLERANCE[dtype]
    assert h.dtype == dtype and mean.dtype == rstd.dtype == torch.float32
    assert z.shape == (3, 48) and z.dtype == torch.float32  # kept: the backward reads no w2 for it
    assert relative_error(z, z_ref) <= tol
    assert mean.shape == rstd.shape == (3,)
    assert relative_error(h, h_ref) <= tol and relative_error(mean, z_ref.mean(-1)) <= tol
    rstd_ref = torch.rsqrt(z_ref.var(-1, unbiased=False) + 1e-3)
    assert relative_error(rstd / rstd_ref, torch.ones(3, dtype=torch.float64)) <= tol
    dy = torch.randn_like(y)
    grads = triton_grouped.grouped_residual_mlp_backward(dy, x, w1, w2, b2, g, h, z, mean, rstd)
    out = grouped_residual_mlp_reference(*params, 1e-3)
    ref_grads = torch.autograd.grad(out, params, dy.double())
    for name, got, want in zip(NAMES, (y, *grads), (out, *ref_grads)):
        assert got.dtype == dtype and got.shape == want.shape, name
        assert relative_error(got, want) <= tol, name


def _recorded_launches(monkeypatch):
    """Replaces the launcher's _launch with one that records (name, grid, args), then launches."""
    launches = []
    original = triton_grouped._launch

    def record(kernel, name, grid, *args, **constexprs):
        launches.append((name, tuple(grid), args))
        original(kernel, name, grid, *args, **constexprs)

    monkeypatch.setattr(triton_grouped, "_launch", record)
    return launches


@interpreted
def test_launch_count_one_read_of_each_weight_per_pass_and_the_plan(monkeypatch):
    """3 launches forward, 4 backward; w1 and w2 are each passed to one launch per pass (the
    backward takes the forward's z instead of re-reading w2); the grids are launch_plan's."""
    n, d, m = 2, 300, 150
    tensors = make_inputs(n, d, m, torch.float32)
    launches = _recorded_launches(monkeypatch)
    y, h, z, mean, rstd = triton_grouped.grouped_residual_mlp_forward(*tensors, 1e-5)
    forward = list(launches)
    x, w1, _, w2, b2, g, _ = tensors
    triton_grouped.grouped_residual_mlp_backward(torch.randn_like(y), x, w1, w2, b2, g, h, z,
                                                 mean, rstd)
    backward = launches[len(forward):]
    plan = triton_grouped.launch_plan(n, d, m, 4)
    for got, planned in ((forward, plan["forward"]), (backward, plan["backward"])):
        assert [name for name, _, _ in got] == [row[0] for row in planned]
        for (name, grid, _), row in zip(got, planned):
            assert triton_grouped._prod(grid) == row[1], name
    for weight in (w1, w2):
        for launches_of_pass in (forward, backward):
            readers = [name for name, _, args in launches_of_pass if any(a is weight for a in args)]
            assert len(readers) == 1, readers


@interpreted
@pytest.mark.parametrize("target", [1, 12, 1000])
def test_split_loops_match_the_reference(target, monkeypatch, poisoned):
    """The m- and d-chunked backward loops (even, uneven and one-tile chunks) cover every
    element once: target 12 at (2, 300, 150) cuts the 3 tiles of each loop
    into chunks of 2 and 1 (the last chunk ends inside a tile)."""
    monkeypatch.setattr(triton_grouped, "TARGET_PROGRAMS", target)
    plan = triton_grouped.plan(2, 300, 150)
    splits = (plan["up_grad"]["grid"][2], plan["down_grad"]["grid"][2])
    assert splits == {1: (1, 1), 12: (2, 2), 1000: (3, 3)}[target]
    check_against_reference(make_inputs(2, 300, 150), torch.float32)


@pytest.mark.parametrize("d, m", [(768, 400), (768, 800), (2048, 400), (2048, 800)])
def test_weight_reading_launches_fill_an_h200_at_ten_groups(d, m):
    """At n = 10 every launch that streams w1 or w2 has >= 128 programs (132 SMs), and moves
    at least the bytes of the weight it streams (and dW, in the backward)."""
    plan = triton_grouped.launch_plan(10, d, m, 2)
    rows = {name: row for name, *row in plan["forward"] + plan["backward"]}
    weight = 10 * d * m * 2
    for name in ("hidden", "output", "up_grad", "down_grad"):
        programs, moved, flops = rows[name]
        assert programs >= 128, (name, programs)
        assert moved >= weight * (2 if name.endswith("_grad") else 1), name
        assert flops >= 2 * 10 * d * m, name


@interpreted
def test_nan_stays_in_its_row():
    inputs = make_inputs(3, 16, 4, torch.float32)
    inputs[0][1, 2] = float("nan")
    out = grouped_residual_mlp(*inputs, backend="triton")
    assert torch.isnan(out[1]).all()
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[2]).all()


@interpreted
def test_opcheck_of_the_registered_custom_ops():
    """Schema and fake (meta) shapes and strides of the Triton path's registered ops."""
    x, w1, b1, w2, b2, g, beta = make_inputs(2, 12, 3, torch.float32)
    fwd_args = (x, w1, b1, w2, b2, g, beta, 1e-5, "triton")
    y, h, z, mean, rstd = _library.grouped_residual_mlp_fwd(*fwd_args)
    checks = ("test_schema", "test_faketensor")
    torch.library.opcheck(_library.grouped_residual_mlp_fwd, fwd_args, test_utils=checks)
    bwd_args = (torch.randn_like(y), x, w1, w2, b2, g, h, z, mean, rstd, "triton")
    torch.library.opcheck(_library.grouped_residual_mlp_bwd, bwd_args, test_utils=checks)


def _bad_calls():
    x, w1, b1, w2, b2, g, beta = make_inputs(3, 8, 5, torch.float32)
    good = {"x": x, "w1": w1, "b1": b1, "w2": w2, "b2": b2, "ln_weight": g, "ln_bias": beta}
    return [
        ({"w1": torch.randn(3, 5, 9)}, ValueError, r"w1: expected shape \(3, 'm >= 1', 8\), got \(3, 5, 9\)"),
        ({"w1": torch.randn(2, 5, 8)}, ValueError, r"w1: expected shape .* got \(2, 5, 8\)"),
        ({"b1": torch.randn(3, 4)}, ValueError, r"b1: expected shape \(3, 5\), got \(3, 4\)"),
        ({"w2": torch.randn(3, 8, 4)}, ValueError, r"w2: expected shape \(3, 8, 5\), got \(3, 8, 4\)"),
        ({"b2": torch.randn(8)}, ValueError, r"b2: expected shape \(3, 8\), got \(8,\)"),
        ({"ln_weight": g.double()}, TypeError, r"ln_weight: expected dtype torch.float32 .* got torch.float64"),
        ({"ln_bias": beta.to("meta")}, ValueError, r"ln_bias: expected device cpu .* got meta"),
        ({"w2": torch.empty(0)}, ValueError, r"w2: expected shape .* ZeRO-3"),
        ({"b1": b1.tolist()}, TypeError, r"b1: expected a torch.Tensor, got list"),
        ({"x": x[None]}, ValueError, r"x: expected a 2-D tensor, got 3-D"),
        ({"x": x.to(torch.int32)}, TypeError, r"x: expected dtype in .* got torch.int32"),
    ], good


@pytest.mark.parametrize("case", range(len(_bad_calls()[0])))
def test_bad_inputs_name_the_argument(case):
    calls, good = _bad_calls()
    change, error, pattern = calls[case]
    with pytest.raises(error, match=pattern):
        grouped_residual_mlp(**{**good, **change}, backend="triton")


def test_bad_eps_backend_and_dtypes_the_kernels_do_not_take():
    x, *weights = make_inputs(2, 8, 3, torch.float32)
    with pytest.raises(ValueError, match="eps: expected a positive float, got -1.0"):
        grouped_residual_mlp(x, *weights, eps=-1.0, backend="triton")
    with pytest.raises(ValueError, match="backend: expected one of"):
        grouped_residual_mlp(x, *weights, backend="cuda")
    as64 = [t.double() for t in (x, *weights)]
    with pytest.raises(BackendUnavailableError, match="float32, float16 or bfloat16, got torch.float64"):
        grouped_residual_mlp(*as64, backend="triton")


def test_reference_gradcheck_float64():
    inputs = [t.requires_grad_() for t in make_inputs(3, 5, 4)]
    assert torch.autograd.gradcheck(grouped_residual_mlp_reference, (*inputs, 1e-5))


@pytest.mark.parametrize("n", [1, 3, 10])
def test_reference_is_a_loop_of_the_shared_reference(n):
    x, w1, b1, w2, b2, g, beta = make_inputs(n, 8, 5)
    got = grouped_residual_mlp_reference(x, w1, b1, w2, b2, g, beta)
    loop = torch.cat(
        [residual_mlp_reference(x[i : i + 1], w1[i], b1[i], w2[i], b2[i], g[i], beta[i]) for i in range(n)]
    )
    torch.testing.assert_close(got, loop, rtol=1e-12, atol=1e-12)



def _launched_pattern(kernel, param, value) -> str:
    """What Triton's launcher compiles an integer argument as (rpt_fast.ops.aot mirrors it)."""
    if param in kernel.unspecialised:
        return "i32"
    if value == 1:
        return "constexpr 1"
    return "i32 divisible" if value % 16 == 0 else "i32"


def _compiled_pattern(spec, param) -> str:
    if spec.signature[param] == "constexpr":
        return f"constexpr {spec.constexprs[param]}"
    return spec.signature[param] + (" divisible" if param in spec.divisible else "")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_launches_run_the_variants_the_aot_check_compiles(dtype, monkeypatch):
    """Every launch, at d and m of 1, odd and multiples of 16 and from unaligned views, gets
    16-byte-aligned pointers and integers that Triton specialises exactly as one of
    ``aot_specs`` is compiled (recorded, not run)."""
    recorded = []

    def record(kernel, name, grid, shapes_hinted, *args, **constexprs):
        recorded.append((name, kernel.pick(shapes_hinted), args))

    monkeypatch.setattr(triton_grouped, "_launch", record)
    specs = {spec.name: spec for spec in triton_grouped.aot_specs(dtype)}
    for n, d, m in [(1, 8, 1), (3, 100, 5), (2, 768, 800), (1, 16, 16), (2, 1, 32)]:
        x, w1, b1, w2, b2, g, beta = (unaligned(t.to(dtype)) for t in make_inputs(n, d, m))
        y, h, z, mean, rstd = triton_grouped.grouped_residual_mlp_forward(
            x, w1, b1, w2, b2, g, beta, 1e-5)
        triton_grouped.grouped_residual_mlp_backward(unaligned(y), x, w1, w2, b2, g, h, z,
                                                     mean, rstd)
    assert len(recorded) == 5 * 7
    for name, kernel, args in recorded:
        spec = specs[f"{name} ({kernel.variant})"]
        for param, value in zip(kernel.arg_names, args):
            if isinstance(value, torch.Tensor):
                assert value.data_ptr() % 16 == 0, (name, param)
            elif isinstance(value, int):
                launched = _launched_pattern(kernel, param, value)
                assert launched == _compiled_pattern(spec, param), (spec.name, param, value)


@interpreted
def test_unaligned_views_match_the_reference(poisoned):
    check_against_reference([unaligned(t.float()) for t in make_inputs(3, 37, 5)],
                            torch.float32)
