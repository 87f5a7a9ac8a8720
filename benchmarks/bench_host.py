"""Host time of the Triton backend: what one eager call of the shared op costs the CPU before any
kernel runs (input checks, autograd, launch plans, allocations). Kernel launches are stubbed
out, so the numbers exclude Triton's own launcher and any GPU time.

At prompt shapes the cost model gives ~10-20 us of GPU work for a forward + backward, so
without CUDA graphs this host time, not the kernels, can set the pace. On CPU it needs no GPU
(TRITON_INTERPRET=1 lets the backend take CPU tensors; CPU allocations stand in for the CUDA
caching allocator's); on a GPU, ``--device cuda`` measures the same path on CUDA tensors.

    python benchmarks/bench_host.py                    # CPU, results/local/<device>/host.json
    python benchmarks/bench_host.py --device cuda --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--shapes", default="10,768,400;100,2048,800", help="'M,d,m;M,d,m'")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--budget", type=float, default=0.5, help="seconds of reps per measurement")
    p.add_argument("--out", help="results folder (default benchmarks/results/local/<device>)")
    return p.parse_args(argv)


def measure(shape, dtype, device, budget) -> dict:
    """Median host ms of the launch plans alone, the forward, and the forward + backward (the
    calls ``bench_kernels.py`` times, on its inputs)."""
    import torch

    from _providers import inputs, make, mode_fn
    from _timing import cpu_median_ms
    from rpt_fast.ops import triton_residual_mlp as trm

    M, d, m = shape
    g = torch.Generator().manual_seed(0)
    tensors = inputs("shared", M, d, m, dtype, device, g)
    dy = torch.randn(M, d, generator=g).to(device=device, dtype=dtype)
    raw = [t.detach() for t in tensors]
    _, (_, h, zb, mean, rstd) = trm.forward_plan(*raw, 1e-5)

    def plans():
        trm.forward_plan(*raw, 1e-5)
        trm.backward_plan(dy, raw[0], raw[1], raw[3], raw[4], raw[5], h, zb, mean, rstd)

    triton = make("shared", "triton")
    calls = (("plans_ms", plans), ("forward_ms", mode_fn(triton, tensors, "fwd", dy)),
             ("full_ms", mode_fn(triton, tensors, "full", dy)))
    return {name: cpu_median_ms(fn, budget_s=budget, warmup=20, min_reps=50, max_reps=100000)
            for name, fn in calls}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: CPU tensors allowed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch

    from _results import LOCAL_RESULTS
    from bench_kernels import device_slug, environment
    from rpt_fast.ops import launches

    launches.Launch.__call__ = lambda self: None  # host time only: no kernel runs
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.set_num_threads(1)
    rows = []
    print(f"{'M':>6} {'d':>6} {'m':>6}  plans us  forward us  fwd+bwd us")
    for text in args.shapes.split(";"):
        shape = tuple(int(v) for v in text.split(","))
        row = {"M": shape[0], "d": shape[1], "m": shape[2], "dtype": args.dtype,
               **measure(shape, dtype, device, args.budget)}
        rows.append(row)
        print(f"{shape[0]:>6} {shape[1]:>6} {shape[2]:>6}  {row['plans_ms'] * 1e3:8.1f}  "
              f"{row['forward_ms'] * 1e3:10.1f}  {row['full_ms'] * 1e3:10.1f}")
    out = Path(args.out or LOCAL_RESULTS / device_slug(device))
    out.mkdir(parents=True, exist_ok=True)
    report = {**environment(device), "threads": 1, "launches": "stubbed", "rows": rows}
    (out / "host.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'host.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
