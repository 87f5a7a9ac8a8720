"""GPU tier: the Triton kernels on CUDA in every dtype (bf16 included, which the interpreter
cannot check), CUDA-graph capture and bitwise determinism. Skipped without a GPU."""

import pytest
import torch

import rpt_fast
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference

pytestmark = pytest.mark.gpu

# Relative Frobenius error vs the float64 reference (tf32 off for fp32).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}
PROMPT_SHAPES = [(1, 64, 5), (7, 768, 800), (100, 1000, 64), (128, 2048, 800)]
CASES = [(False, *s) for s in PROMPT_SHAPES + [(4096, 1024, 256)]] + [(True, *s) for s in PROMPT_SHAPES]


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


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("grouped, M, d, m", CASES)
def test_triton_matches_float64_reference(grouped, dtype, M, d, m):
    op = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    ref_op = grouped_residual_mlp_reference if grouped else residual_mlp_reference
    inputs = _inputs(grouped, M, d, m, dtype)
    out = op(*inputs, backend="triton")
    dy = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, dy)
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref = ref_op(*ref_inputs)
    ref_grads = torch.autograd.grad(ref, ref_inputs, dy.double())
    assert _rel(out, ref) < TOLERANCE[dtype]
    for name, g, r in zip(["x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias"], grads, ref_grads):
        assert g.dtype == dtype
        assert _rel(g, r) < TOLERANCE[dtype] * 10, name


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_bitwise_deterministic_and_graph_capturable(grouped):
    op = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    inputs = _inputs(grouped, 100, 1024, 800, torch.bfloat16)
    dy = torch.randn(100, 1024, device="cuda", dtype=torch.bfloat16)

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
