"""GPU tier: the shared op's Triton forward + backward captured in a CUDA graph and replayed on
new inputs gives what eager launches give (bitwise: the kernels are deterministic), and the
launchers never synchronise with the host. Skipped without a GPU."""

import pytest
import torch

from gpu_op_cases import cuda_params, triton_step

from rpt_fast.ops.reference import residual_mlp_reference

pytestmark = pytest.mark.gpu

# Split-K path (arrival counters) at the paper's shape and a small one; the tiled path.
SHAPES = [(100, 2048, 800), (10, 768, 400), (4096, 1024, 256)]
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("M, d, m", SHAPES, ids=str)
def test_forward_backward_replay_matches_eager(M, d, m, dtype):
    params = cuda_params(d, m, dtype)
    static_x = torch.randn(M, d, device="cuda", dtype=dtype, requires_grad=True)
    static_dy = torch.randn(M, d, device="cuda", dtype=dtype)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: compiles the kernels outside the capture
        for _ in range(2):
            triton_step(static_x, params, static_dy)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = triton_step(static_x, params, static_dy)

    for _ in range(2):  # fresh inputs each replay, copied into the captured buffers
        x = torch.randn(M, d, device="cuda", dtype=dtype)
        dy = torch.randn(M, d, device="cuda", dtype=dtype)
        with torch.no_grad():
            static_x.copy_(x)
            static_dy.copy_(dy)
        graph.replay()
        eager = triton_step(x.requires_grad_(), params, dy)
        torch.cuda.synchronize()
        for name, replayed, ref in zip(("y", "dx", "dw1", "db1", "dw2", "db2", "dln_w", "dln_b"),
                                       static_out, eager):
            assert torch.equal(replayed, ref), f"{name}: replay differs from eager launches"

    ref_inputs = [t.detach().double().requires_grad_() for t in (x, *params)]
    ref = residual_mlp_reference(*ref_inputs)
    ref_grads = torch.autograd.grad(ref, ref_inputs, dy.double())
    for out, r in zip(static_out, (ref, *ref_grads)):
        assert ((out.double() - r).norm() / r.norm()).item() < TOLERANCE[dtype]


@pytest.mark.parametrize("M, d, m", SHAPES, ids=str)
def test_launchers_never_synchronise(M, d, m):
    params = cuda_params(d, m, torch.bfloat16)
    x = torch.randn(M, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(M, d, device="cuda", dtype=torch.bfloat16)
    triton_step(x, params, dy)  # first call: compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        triton_step(x, params, dy)
    finally:
        torch.cuda.set_sync_debug_mode("default")
