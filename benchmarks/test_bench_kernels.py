"""pytest-benchmark suite of the shared and grouped ops for a few shapes, to compare versions:

  pytest benchmarks/test_bench_kernels.py --benchmark-autosave
  pytest benchmarks/test_bench_kernels.py --benchmark-compare

Not part of the unit tests (tests/). Runs every available backend plus eager and (CPU: dynamic)
torch.compile; CUDA timings synchronize inside the timed call."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import rpt_fast  # noqa: E402
from _providers import inputs, make, mode_fn  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
SHAPES = {"shared": [(10, 768, 800), (100, 2048, 800), (4096, 1024, 256)],
          "grouped": [(100, 768, 400)]}
CASES = [(op, s) for op, shapes in SHAPES.items() for s in shapes]
PROVIDERS = ["eager", "compile", "triton", "native"]


@pytest.mark.parametrize("mode", ["fwd", "full"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("op,shape", CASES, ids=[f"{o}-{'x'.join(map(str, s))}" for o, s in CASES])
def test_kernel(benchmark, op, shape, provider, mode):
    gen = torch.Generator().manual_seed(0)
    tensors = inputs(op, *shape, DTYPE, DEVICE, gen)
    dy = torch.randn(shape[0], shape[1], generator=gen).to(DEVICE, DTYPE)
    fn = mode_fn(make(op, provider, dynamic=DEVICE.type != "cuda"), tensors, mode, dy)
    try:
        fn()
    except rpt_fast.BackendUnavailableError as exc:
        pytest.skip(str(exc))
    sync = torch.cuda.synchronize if DEVICE.type == "cuda" else (lambda: None)
    benchmark.group = f"{op} {'x'.join(map(str, shape))} {mode}"
    benchmark.extra_info.update(device=str(DEVICE), dtype=str(DTYPE))
    benchmark(lambda: (fn(), sync()))
