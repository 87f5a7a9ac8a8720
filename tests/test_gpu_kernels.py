"""GPU tier: the Triton kernels on CUDA in every dtype (bf16 included, which the interpreter
cannot check) with NaN-poisoned allocations, rows up to the widest d the kernels take,
CUDA-graph capture and bitwise determinism. Skipped without a GPU."""

import contextlib

import pytest
import torch

import rpt_fast
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference
from rpt_fast.ops.triton_residual_mlp import MAX_D
from rpt_fast.selfcheck import tolerances  # the bounds python -m rpt_fast holds every backend to

pytestmark = pytest.mark.gpu

NAMES = ("y", "dx", "dw1", "db1", "dw2", "db2", "dln_weight", "dln_bias")
PROMPT_SHAPES = [(1, 64, 5), (7, 768, 800), (100, 1000, 64), (128, 2048, 800), (16, MAX_D, 800)]
CASES = [(False, *s) for s in PROMPT_SHAPES + [(4096, 1024, 256)]] + [(True, *s) for s in PROMPT_SHAPES]


@contextlib.contextmanager
def _fp32_matmul_precision_ieee():
    """No TF32 for fp32, set through whichever API this torch has (reading the legacy flag
    raises once the new one has been used)."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        old = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = old
    else:
        old = matmul.allow_tf32
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = old


@pytest.fixture(autouse=True)
def _no_tf32():
    with _fp32_matmul_precision_ieee():
        yield


def _inputs(grouped, M, d, m, dtype):
    lead = (M,) if grouped else ()
    x = torch.randn(M, d, device="cuda")
    w1 = torch.randn(*lead, m, d, device="cuda") / d**0.5
    b1 = 0.1 * torch.randn(*lead, m, device="cuda")
    w2 = torch.randn(*lead, d, m, device="cuda") / m**0.5
    b2 = 0.1 * torch.randn(*lead, d, device="cuda")
    g = 1 + 0.1 * torch.randn(*lead, d, device="cuda")
    beta = 0.1 * torch.randn(*lead, d, device="cuda")
    return [t.to(dtype).requires_grad_() for t in (x, w1, b1, w2, b2, g, beta)]


def _rel(a, b):
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("grouped, M, d, m", CASES)
def test_triton_matches_float64_reference(grouped, dtype, M, d, m, nan_poisoning):
    op = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    ref_op = grouped_residual_mlp_reference if grouped else residual_mlp_reference
    inputs = _inputs(grouped, M, d, m, dtype)
    dy = torch.randn(M, d, device="cuda", dtype=dtype)
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref = ref_op(*ref_inputs)
    expected = (ref, *torch.autograd.grad(ref, ref_inputs, dy.double()))
    with nan_poisoning():  # only the op: cuBLAS (the reference's) refuses deterministic mode
        out = op(*inputs, backend="triton")
        got = (out, *torch.autograd.grad(out, inputs, dy))
    out_tol, grad_tol = tolerances(dtype)
    for name, a, b in zip(NAMES, got, expected):
        assert a.dtype == dtype and a.shape == b.shape, name
        assert torch.isfinite(a).all(), f"{name}: unwritten (NaN) or non-finite elements"
        err = _rel(a, b)
        assert err < (out_tol if name == "y" else grad_tol), f"{name}: relative error {err:.2e}"


# The shared op's tiled path (more than 128 rows) splits its weight gradients over the rows,
# whose partials the last program to arrive sums: 4096 rows give every tile several splits.
@pytest.mark.parametrize("grouped, M, d, m", [(False, 100, 1024, 800), (False, 4096, 1024, 256),
                                              (True, 100, 1024, 800)],
                         ids=["shared-split-K", "shared-tiled", "grouped"])
@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=str)  # so count_variants.py counts bf16 only
def test_bitwise_deterministic_and_graph_capturable(grouped, M, d, m, dtype):
    op = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    inputs = _inputs(grouped, M, d, m, dtype)
    dy = torch.randn(M, d, device="cuda", dtype=dtype)

    def step():
        out = op(*inputs, backend="triton")
        return (out, *torch.autograd.grad(out, inputs, dy))

    first, second = step(), step()
    for a, b in zip(first, second):
        assert torch.equal(a, b)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm-up outside the graph: kernels compiled, allocator primed
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured, first):
        assert torch.equal(a, b)
