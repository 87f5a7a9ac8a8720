"""GPU correctness check of the fused ops: residual_mlp and grouped_residual_mlp with a kernel
backend (default triton) on CUDA, for a grid of shapes and fp32/fp16/bf16, against the float64
reference: forward output and all seven gradients. Also checks that a CUDA graph of forward +
backward replays to the same bits (outputs poisoned with NaN before the replay) and that two
runs give bitwise identical results. Prints max relative errors; exits 1 on any failure.

  python benchmarks/gpu_correctness.py                   # on a GPU
  TRITON_INTERPRET=1 python benchmarks/gpu_correctness.py --device cpu --quick   # dry run
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if not os.environ.get("RPT_FAST_INSTALLED"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import rpt_fast  # noqa: E402
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference  # noqa: E402

# Norm-wise relative error bounds, max|got - want| / max|want|. fp32 allows TF32 dots.
TOLERANCE = {torch.float32: 5e-3, torch.float16: 1e-2, torch.bfloat16: 6e-2}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NAMES = ("y", "dx", "dw1", "db1", "dw2", "db2", "dln_weight", "dln_bias")

SHARED_SHAPES = [(1, 64, 16), (10, 768, 400), (100, 1024, 800), (100, 2048, 800), (37, 4096, 1600),
                 (4096, 1024, 64), (16384, 1024, 256), (1000, 768, 100), (333, 2048, 800)]
GROUPED_SHAPES = [(1, 64, 16), (10, 768, 400), (100, 768, 800), (100, 2048, 400), (7, 4096, 1600)]
QUICK_SHARED = [(1, 32, 8), (5, 64, 16), (33, 48, 24)]
QUICK_GROUPED = [(1, 32, 8), (5, 48, 16)]


def make_inputs(grouped: bool, M: int, d: int, m: int, gen: torch.Generator):
    """Fresh random float64 inputs (never zeros) and an upstream gradient."""
    lead = (M,) if grouped else ()
    t = [torch.randn(M, d, generator=gen, dtype=torch.float64),
         torch.randn(*lead, m, d, generator=gen, dtype=torch.float64) * d**-0.5,
         torch.randn(*lead, m, generator=gen, dtype=torch.float64) * 0.1,
         torch.randn(*lead, d, m, generator=gen, dtype=torch.float64) * m**-0.5,
         torch.randn(*lead, d, generator=gen, dtype=torch.float64) * 0.1,
         1 + 0.1 * torch.randn(*lead, d, generator=gen, dtype=torch.float64),
         torch.randn(*lead, d, generator=gen, dtype=torch.float64) * 0.1]
    return t, torch.randn(M, d, generator=gen, dtype=torch.float64)


def run(op, tensors, dy, backend):
    leaves = [t.detach().requires_grad_(True) for t in tensors]
    y = op(*leaves, backend=backend) if backend else op(*leaves)
    grads = torch.autograd.grad(y, leaves, dy)
    return [y.detach(), *grads]


def rel_errors(got, want):
    return [((g.double() - w).abs().max() / w.abs().max().clamp_min(1e-30)).item()
            for g, w in zip(got, want)]


def check_case(grouped, shape, dtype, device, backend, gen) -> tuple[bool, str]:
    op = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    reference = grouped_residual_mlp_reference if grouped else residual_mlp_reference
    t64, dy64 = make_inputs(grouped, *shape, gen)
    t64, dy64 = [t.to(device) for t in t64], dy64.to(device)
    want = run(reference, t64, dy64, None)  # float64 on the same device
    low = [t.to(dtype) for t in t64]
    dy = dy64.to(dtype)
    got = run(op, low, dy, backend)
    errs = rel_errors(got, want)
    worst = max(errs)
    ok = worst <= TOLERANCE[dtype] and all(torch.isfinite(g).all() for g in got)
    again = run(op, low, dy, backend)
    deterministic = all(torch.equal(a, b) for a, b in zip(got, again))
    graph = graph_check(op, low, dy, backend, got) if device.type == "cuda" else "n/a"
    ok = ok and deterministic and graph in ("ok", "n/a")
    label = f"{'grouped' if grouped else 'shared '} {str(dtype)[6:]:8s} M={shape[0]:<6d} d={shape[1]:<5d} m={shape[2]:<5d}"
    detail = " ".join(f"{n}={e:.1e}" for n, e in zip(NAMES, errs))
    return ok, (f"{'PASS' if ok else 'FAIL'} {label} max_rel={worst:.2e} (tol {TOLERANCE[dtype]:.0e}) "
                f"deterministic={deterministic} graph={graph} | {detail}")


def graph_check(op, tensors, dy, backend, expected) -> str:
    """Captures forward + backward in a CUDA graph, poisons its outputs, replays, compares bits."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    static_dy = dy.clone()

    def step():
        y = op(*leaves, backend=backend)
        return [y, *torch.autograd.grad(y, leaves, static_dy)]

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = step()
        for o in outs:
            o.detach().fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
    except Exception as exc:  # report the capture failure as this case's result
        return f"capture failed ({type(exc).__name__}: {str(exc)[:100]})"
    same = all(torch.equal(o.detach(), e) for o, e in zip(outs, expected))
    return "ok" if same else "replay differs"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="triton", help="comma list, e.g. triton,auto")
    ap.add_argument("--dtype", default=None, help="fp32,fp16,bf16 (default all; fp32,fp16 on CPU)")
    ap.add_argument("--quick", action="store_true", help="small shapes (for the interpreter)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("FAIL: --device cuda but no GPU is visible", file=sys.stderr)
        return 1
    default_dtypes = "fp32,fp16,bf16" if device.type == "cuda" else "fp32,fp16"
    dtypes = [DTYPES[s] for s in (args.dtype or default_dtypes).split(",")]
    shared = QUICK_SHARED if args.quick else SHARED_SHAPES
    grouped = QUICK_GROUPED if args.quick else GROUPED_SHAPES
    gen = torch.Generator().manual_seed(0)
    failures = 0
    for backend in args.backend.split(","):
        print(f"== backend {backend} on {device}")
        for is_grouped, shapes in ((False, shared), (True, grouped)):
            for shape in shapes:
                for dtype in dtypes:
                    try:
                        ok, line = check_case(is_grouped, shape, dtype, device, backend, gen)
                    except rpt_fast.BackendUnavailableError as exc:
                        ok, line = False, f"FAIL {backend} unavailable: {exc}"
                    failures += not ok
                    print(line, flush=True)
    print(f"{'ALL PASSED' if failures == 0 else f'{failures} FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
