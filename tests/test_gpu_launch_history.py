"""GPU tier: no result depends on what earlier launches left behind. The arrival counters of the
split reductions are made and zeroed per call, so a CUDA graph captured without warm-up on its
stream, graphs replayed in any order or on two streams at once, and torch.compile's
reduce-overhead mode (cudagraph trees owning the memory pool) all give the float64
reference's numbers. Skipped without a GPU; tests/test_triton_launch_history.py checks the
same on CPU with poisoned buffers."""

import pytest
import torch

from gpu_op_cases import cuda_params, triton_step

import rpt_fast
from rpt_fast.ops.reference import residual_mlp_reference

pytestmark = pytest.mark.gpu

# Split-K (F1, B2 and B3 count arrivals) and tiled (B3's split dW reductions count arrivals);
# the shapes test_gpu_cuda_graphs.py compiles, so Triton's cache serves them.
SHAPES = [(10, 768, 400), (4096, 1024, 256)]
DTYPE = torch.bfloat16
# Relative Frobenius error against float64: bf16 storage of the outputs costs ~1e-2; state left
# by another launch costs 0.3 or more, or NaN.
TOLERANCE = 3e-2
NAMES = ("y", "dx", "dw1", "db1", "dw2", "db2", "dln_weight", "dln_bias")


def _check(results, x, params, dy, where):
    inputs = [t.detach().double().requires_grad_() for t in (x, *params)]
    ref = residual_mlp_reference(*inputs)
    expected = (ref, *torch.autograd.grad(ref, inputs, dy.double()))
    for name, got, want in zip(NAMES, results, expected):
        err = ((got.double() - want).norm() / want.norm()).item()
        assert err < TOLERANCE, f"{where}: {name} relative error {err:.3g}"


class _Captured:
    """One shape's forward + backward captured in a CUDA graph on static inputs."""

    def __init__(self, M, d, m, warm_up_stream=None):
        self.params = cuda_params(d, m, DTYPE)
        self.x = torch.randn(M, d, device="cuda", dtype=DTYPE, requires_grad=True)
        self.dy = torch.randn(M, d, device="cuda", dtype=DTYPE)
        if warm_up_stream is not None:  # compiles the kernels, on another stream than capture's
            warm_up_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(warm_up_stream):
                triton_step(self.x, self.params, self.dy)
            torch.cuda.current_stream().wait_stream(warm_up_stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # the default capture stream, shared by every graph
            self.out = triton_step(self.x, self.params, self.dy)

    def new_inputs(self):
        with torch.no_grad():
            self.x.normal_()
            self.dy.normal_()

    def check(self, where):
        _check(self.out, self.x, self.params, self.dy, where)


@pytest.mark.parametrize("M, d, m", SHAPES, ids=str)
def test_graph_captured_without_warm_up_on_its_stream(M, d, m):
    captured = _Captured(M, d, m, warm_up_stream=torch.cuda.Stream())
    for i in range(3):
        captured.new_inputs()
        captured.graph.replay()
        torch.cuda.synchronize()
        captured.check(f"replay {i}")


def test_two_graphs_replayed_in_another_order_and_on_two_streams_at_once():
    side = torch.cuda.Stream()
    graphs = {"first": _Captured(*SHAPES[0], warm_up_stream=side),
              "second": _Captured(*SHAPES[0], warm_up_stream=side),
              "tiled": _Captured(*SHAPES[1], warm_up_stream=side)}
    for order in (("second", "first"), ("first", "tiled", "second"), ("tiled", "first")):
        for name in order:
            graphs[name].new_inputs()
            graphs[name].graph.replay()
        torch.cuda.synchronize()
        for name in order:
            graphs[name].check(f"{name}, replayed in the order {order}")
    streams = (torch.cuda.Stream(), torch.cuda.Stream())
    for _ in range(3):
        for name in ("first", "second"):
            graphs[name].new_inputs()
        torch.cuda.synchronize()
        for stream, name in zip(streams, ("first", "second")):
            with torch.cuda.stream(stream):
                graphs[name].graph.replay()
        torch.cuda.synchronize()
        for name in ("first", "second"):
            graphs[name].check(f"{name}, replayed on two streams at once")


def test_eager_calls_on_two_streams_at_once():
    M, d, m = SHAPES[0]
    params = cuda_params(d, m, DTYPE)
    streams = (torch.cuda.Stream(), torch.cuda.Stream())
    inputs = [(torch.randn(M, d, device="cuda", dtype=DTYPE, requires_grad=True),
               torch.randn(M, d, device="cuda", dtype=DTYPE)) for _ in streams]
    triton_step(inputs[0][0], params, inputs[0][1])  # compiles
    torch.cuda.synchronize()
    for stream in streams:
        stream.wait_stream(torch.cuda.current_stream())
    results = []
    for stream, (x, dy) in zip(streams, inputs):
        with torch.cuda.stream(stream):
            results.append(triton_step(x, params, dy))
    torch.cuda.synchronize()
    for i, (result, (x, dy)) in enumerate(zip(results, inputs)):
        _check(result, x, params, dy, f"stream {i}")


def test_reduce_overhead_compile_alternating_shapes():
    models = {shape: cuda_params(*shape[1:], DTYPE) for shape in SHAPES}

    @torch.compile(mode="reduce-overhead", dynamic=False)
    def forward(x, *params):
        return rpt_fast.residual_mlp(x, *params, backend="triton")

    for i in range(4):
        for shape, params in models.items():
            torch.compiler.cudagraph_mark_step_begin()
            M, d, _ = shape
            x = torch.randn(M, d, device="cuda", dtype=DTYPE, requires_grad=True)
            dy = torch.randn(M, d, device="cuda", dtype=DTYPE)
            y = forward(x, *params)
            grads = torch.autograd.grad(y, [x, *params], dy)
            results = [t.clone() for t in (y, *grads)]  # the next replay reuses the pool
            _check(results, x, params, dy, f"call {i} at {shape}")
