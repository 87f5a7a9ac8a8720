"""torch.compile runs the fused kernels: the registered custom ops are in the compiled forward
and backward graphs (not an eager re-trace of the reference), the compiled value and
gradients match the float64 reference (also under ``dynamic=True`` with changing row counts),
and ``opcheck`` passes on every registered op."""

import pytest
import torch
import torch._dynamo.testing
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

import rpt_fast
from rpt_fast import FusedResidualMLP, _library
from rpt_fast.modules import GroupedResidualMLP
from rpt_fast.ops import load_backend
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference

KERNEL_BACKENDS = ["native", "triton"]  # triton through the interpreter on CPU
GROUPED = pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
PARAMS = ("w1", "b1", "w2", "b2", "ln_weight", "ln_bias")


def _module(grouped, backend, n=5, d=12, m=6):
    """A fused module with fresh random parameters (LayerNorm gains near 1)."""
    if grouped:
        module = GroupedResidualMLP(d, m, num_groups=n, backend=backend)
    else:
        module = FusedResidualMLP(d, m, backend=backend)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(0.3 * torch.randn_like(p) + (1.0 if "norm" in name and "weight" in name else 0.0))
    return module


def _params(module):
    return list(module.parameters())  # (w1, b1, w2, b2, ln_weight, ln_bias) in both modules


def _check_value_and_grads(module, run, grouped, tol=1e-5):
    """``run(x)`` (the compiled module) against the float64 reference: output, dx and every
    parameter's gradient."""
    x = torch.randn(5, 12, requires_grad=True)
    y = run(x)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *_params(module)], dy)
    ref_inputs = [t.detach().double().requires_grad_() for t in (x, *_params(module))]
    ref_op = grouped_residual_mlp_reference if grouped else residual_mlp_reference
    ref = ref_op(*ref_inputs, module.eps if grouped else module.norm.eps)
    ref_grads = torch.autograd.grad(ref, ref_inputs, dy.double())
    for name, got, want in zip(("y", "x", *PARAMS), (y, *grads), (ref, *ref_grads)):
        err = (got.double() - want).abs().max() / want.abs().max().clamp_min(1.0)
        assert err < tol, name


def _recording_backend():
    """An aot_autograd backend that keeps the forward and backward FX graphs it compiles."""
    graphs = {"forward": [], "backward": []}

    def recorder(kind):
        def compiler(gm, example_inputs):
            graphs[kind].append(gm)
            return make_boxed_func(gm.forward)

        return compiler

    return aot_autograd(fw_compiler=recorder("forward"), bw_compiler=recorder("backward")), graphs


def _targets(graphs):
    return {node.target for gm in graphs for node in gm.graph.nodes if node.op == "call_function"}


@GROUPED
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_compiled_graphs_call_the_custom_ops(backend, grouped):
    torch._dynamo.reset()
    module = _module(grouped, backend)
    compiler, graphs = _recording_backend()
    compiled = torch.compile(module, fullgraph=True, backend=compiler)
    _check_value_and_grads(module, compiled, grouped)
    prefix = "grouped_" if grouped else ""
    fwd = getattr(torch.ops.rpt_fast, f"{prefix}residual_mlp_fwd").default
    bwd = getattr(torch.ops.rpt_fast, f"{prefix}residual_mlp_bwd").default
    forward, backward = _targets(graphs["forward"]), _targets(graphs["backward"])
    assert fwd in forward and bwd in backward, (forward, backward)
    # The encoder's own math is inside the ops, not traced around them.
    traced = {str(t) for t in forward | backward}
    assert not any("layer_norm" in t or "relu" in t or "bmm" in t for t in traced), traced


@GROUPED
@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "eager"])
def test_inductor_end_to_end_value_and_gradients(backend, grouped):
    torch._dynamo.reset()
    module = _module(grouped, backend)
    _check_value_and_grads(module, torch.compile(module, fullgraph=True), grouped)


def _op_args(grouped, backend, n=3, d=12, m=5):
    lead = (n,) if grouped else ()
    x = torch.randn(n, d)
    w1, b1 = torch.randn(*lead, m, d) / d**0.5, 0.1 * torch.randn(*lead, m)
    w2, b2 = torch.randn(*lead, d, m) / m**0.5, 0.1 * torch.randn(*lead, d)
    g, beta = 1 + 0.1 * torch.randn(*lead, d), 0.1 * torch.randn(*lead, d)
    assert load_backend(backend).unavailable_reason(x) is None  # loads the native extension
    return x, w1, b1, w2, b2, g, beta


@GROUPED
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_opcheck_every_registered_op(backend, grouped):
    """Schema, autograd registration, fake (meta) shapes and strides, and AOT dispatch."""
    prefix = "grouped_" if grouped else ""
    fwd = getattr(_library, f"{prefix}residual_mlp_fwd")
    bwd = getattr(_library, f"{prefix}residual_mlp_bwd")
    x, w1, b1, w2, b2, g, beta = _op_args(grouped, backend)
    fwd_args = (x, w1, b1, w2, b2, g, beta, 1e-5, backend)
    torch.library.opcheck(fwd, fwd_args)
    y, h, z, mean, rstd = fwd(*fwd_args)
    torch.library.opcheck(bwd, (torch.randn_like(y), x, w1, w2, b2, g, h, z, mean, rstd, backend))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_compiled_op_takes_views(backend):
    """Transposed and strided arguments inside a compiled function: the same numbers and
    gradients as the float64 reference, through the custom ops."""
    torch._dynamo.reset()
    x, w1, b1, w2, b2, g, beta = _op_args(False, backend, n=4)
    leaves = [x, w1.T.contiguous(), torch.stack([b1, b1], -1), w2.T.contiguous(), b2, g, beta]
    leaves = [t.requires_grad_() for t in leaves]

    def views(x, w1_t, b1_2, w2_t, b2, g, beta):
        return x, w1_t.T, b1_2[:, 1], w2_t.T, b2, g, beta

    compiler, graphs = _recording_backend()
    compiled = torch.compile(lambda *t: rpt_fast.residual_mlp(*views(*t), backend=backend),
                             fullgraph=True, backend=compiler)
    y = compiled(*leaves)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, dy)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    ref = residual_mlp_reference(*views(*ref_leaves))
    ref_grads = torch.autograd.grad(ref, ref_leaves, dy.double())
    for got, want in zip((y, *grads), (ref, *ref_grads)):
        assert ((got.double() - want).abs().max() / want.abs().max().clamp_min(1.0)) < 1e-5
    assert torch.ops.rpt_fast.residual_mlp_fwd.default in _targets(graphs["forward"])


def _op_inputs(grouped, rows, d=12, m=5):
    """Fresh random (x, w1, b1, w2, b2, ln_weight, ln_bias) leaves, one MLP per row if grouped."""
    lead = (rows,) if grouped else ()
    tensors = (torch.randn(rows, d), torch.randn(*lead, m, d) / d**0.5, 0.1 * torch.randn(*lead, m),
               torch.randn(*lead, d, m) / m**0.5, 0.1 * torch.randn(*lead, d),
               1 + 0.1 * torch.randn(*lead, d), 0.1 * torch.randn(*lead, d))
    return [t.requires_grad_() for t in tensors]


@GROUPED
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_dynamic_shapes_compile_once_and_match_float64(backend, grouped):
    """``torch.compile(fullgraph=True, dynamic=True)``: one graph serves changing row counts
    (and, for the grouped op, changing group counts, whose weights change shape with them),
    through the custom ops, with the float64 reference's values and gradients."""
    torch._dynamo.reset()
    op = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    ref_op = grouped_residual_mlp_reference if grouped else residual_mlp_reference
    compiler, graphs = _recording_backend()
    compiled = torch.compile(lambda *t: op(*t, backend=backend), fullgraph=True, dynamic=True,
                             backend=compiler)
    for rows in (3, 7, 12):
        leaves = _op_inputs(grouped, rows)
        y = compiled(*leaves)
        dy = torch.randn_like(y)
        grads = torch.autograd.grad(y, leaves, dy)
        ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
        ref = ref_op(*ref_leaves)
        ref_grads = torch.autograd.grad(ref, ref_leaves, dy.double())
        for name, got, want in zip(("y", "x", *PARAMS), (y, *grads), (ref, *ref_grads)):
            err = (got.double() - want).abs().max() / want.abs().max().clamp_min(1.0)
            assert err < 1e-5, (rows, name, err.item())
    assert len(graphs["forward"]) == 1 and len(graphs["backward"]) == 1, "recompiled"
    prefix = "grouped_" if grouped else ""
    assert getattr(torch.ops.rpt_fast, f"{prefix}residual_mlp_fwd").default in _targets(graphs["forward"])
    assert getattr(torch.ops.rpt_fast, f"{prefix}residual_mlp_bwd").default in _targets(graphs["backward"])


@pytest.mark.parametrize("backend", ["auto", "eager"])
def test_dynamic_module_with_leading_dims(backend):
    """A module under ``dynamic=True`` (Parameters static, x dynamic): batch and sequence dims
    change without a recompile, and ``auto`` resolves while tracing as it does eagerly."""
    torch._dynamo.reset()
    module = _module(False, backend)
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend=counter)
    for shape in ((2, 3, 12), (4, 5, 12), (3, 9, 12)):
        x = torch.randn(*shape)
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1
