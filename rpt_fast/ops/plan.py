"""Launch plan of an op priced by the cost model: ``python -m rpt_fast.ops.plan``.

  python -m rpt_fast.ops.plan --shape 100,2048,800 --dtype bf16 --gpu h200
  python -m rpt_fast.ops.plan --op grouped --shape 100,2048,800 --dtype bf16 --json

For each launch of the forward and the backward: grid (programs), bytes, FLOPs, the bandwidth
the model grants it and its estimated time; then totals (CUDA-graph replay and eager launch
overheads) against the op's floor, and for the shared op the speedup over eager PyTorch's
kernels priced by the same model (``--op eager`` lists them). The shared op's plan is the one its launchers run
(``triton_residual_mlp.plans``, built on meta tensors: no GPU, no Triton interpreter needed);
the grouped op's comes from ``triton_grouped.launch_plan`` where that module provides it.
See ``rpt_fast.ops.cost_model`` for the model, its constants and its limits.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from . import cost_model

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PASSES = ("forward", "backward")


def _shared_launches(M, d, m, dtype) -> dict:
    from .triton_residual_mlp import plans

    forward, backward = plans(M, d, m, dtype)
    return {
        name: [(launch.name, launch.grid, launch.programs, launch.nbytes, launch.flops,
                launch.constexprs.get("PRECISION"))
               for launch in launches]
        for name, launches in zip(PASSES, (forward, backward))
    }


def _grouped_launches(M, d, m, dtype) -> dict:
    from . import triton_grouped

    if not hasattr(triton_grouped, "launch_plan"):
        raise SystemExit("--op grouped: this version of triton_grouped has no launch_plan()")
    plan = triton_grouped.launch_plan(M, d, m, torch.finfo(dtype).bits // 8)
    return {
        name: [(n, (programs,), programs, nbytes, flops, None)
               for n, programs, nbytes, flops in plan[name]]
        for name in PASSES
    }


def eager_launches(M: int, d: int, m: int, e: int) -> dict:
    """The kernels eager PyTorch runs for the shared op (cuBLAS GEMMs with fused bias, ATen
    elementwise and LayerNorm kernels), each reading its inputs and writing its outputs once
    and filling the GPU (cuBLAS picks split-K for few rows): the baseline of the targets."""
    x, w, h, s = M * d * e, m * d * e, M * m * e, 8 * M
    full = 10**6  # programs: enough to fill any GPU
    forward = [
        ("addmm x@w1.T+b1", full, x + w + m * e + h, 2 * M * d * m),
        ("relu", full, 2 * h, 0),
        ("addmm h@w2.T+b2", full, h + w + d * e + x, 2 * M * d * m),
        ("layer_norm", full, 2 * x + 2 * d * e + s, 0),
        ("add +x", full, 3 * x, 0),
    ]
    backward = [
        ("layer_norm_backward", full, 3 * x + s + d * e + 2 * d * e, 0),
        ("mm dz@w2", full, x + w + h, 2 * M * d * m),
        ("mm dz.T@h (dw2)", full, x + h + w, 2 * M * d * m),
        ("sum dz (db2)", full, x + d * e, 0),
        ("threshold_backward", full, 3 * h, 0),
        ("mm da.T@x (dw1)", full, h + x + w, 2 * M * d * m),
        ("sum da (db1)", full, h + m * e, 0),
        ("mm da@w1", full, h + w + x, 2 * M * d * m),
        ("add dx+dy", full, 3 * x, 0),
    ]
    return {"forward": [(n, (p,), p, b, f, None) for n, p, b, f in forward],
            "backward": [(n, (p,), p, b, f, None) for n, p, b, f in backward]}


def _dot_type(dtype_name: str, precision: str | None) -> str:
    if dtype_name != "fp32":
        return dtype_name
    return "tf32" if precision == "tf32" else "fp32"


def estimate(op: str, M: int, d: int, m: int, dtype_name: str, gpu_name: str) -> dict:
    """The priced plan: per pass, the launches (dicts) and the totals, and the floors."""
    gpu = cost_model.GPUS[gpu_name]
    dtype = DTYPES[dtype_name]
    e = torch.finfo(dtype).bits // 8
    if op == "eager":
        launches = eager_launches(M, d, m, e)
    else:
        launches = (_shared_launches if op == "shared" else _grouped_launches)(M, d, m, dtype)
    report = {"op": op, "shape": [M, d, m], "dtype": dtype_name, "gpu": gpu.name}
    all_costs = []
    for name in PASSES:
        rows, costs = [], []
        for launch_name, grid, programs, nbytes, flops, precision in launches[name]:
            cost = cost_model.launch_cost(gpu, launch_name, programs, nbytes, flops,
                                          _dot_type(dtype_name, precision))
            costs.append(cost)
            rows.append({"name": launch_name, "grid": list(grid), "programs": programs,
                         "bytes": nbytes, "flops": flops, "bandwidth": cost.bandwidth,
                         "seconds": cost.seconds})
        all_costs += costs
        mode = "fwd" if name == "forward" else "bwd"
        report[name] = {
            "launches": rows,
            "graph_seconds": cost_model.total_seconds(costs, graph=True),
            "eager_seconds": cost_model.total_seconds(costs, graph=False),
            "floor_seconds": cost_model.op_floor(gpu, _floor_op(op), mode, M, d, m, e,
                                                 _dot_type(dtype_name, None)),
        }
    report["full"] = {
        "graph_seconds": cost_model.total_seconds(all_costs, graph=True),
        "eager_seconds": cost_model.total_seconds(all_costs, graph=False),
        "floor_seconds": cost_model.op_floor(gpu, _floor_op(op), "full", M, d, m, e,
                                             _dot_type(dtype_name, None)),
    }
    return report


def _floor_op(op: str) -> str:
    return "grouped" if op == "grouped" else "shared"


def table(report: dict) -> str:
    M, d, m = report["shape"]
    lines = [f"{report['op']} op, (M, d, m) = ({M}, {d}, {m}), {report['dtype']}, {report['gpu']}",
             f"{'pass':8} {'launch':58} {'grid':>12} {'progs':>6} {'MB':>8} {'GFLOP':>7} "
             f"{'GB/s':>7} {'us':>7}"]
    for name in PASSES:
        for r in report[name]["launches"]:
            grid = "x".join(str(g) for g in r["grid"])
            lines.append(f"{name:8} {r['name'][:58]:58} {grid:>12} {r['programs']:>6} "
                         f"{r['bytes'] / 1e6:8.2f} {r['flops'] / 1e9:7.2f} "
                         f"{r['bandwidth'] / 1e9:7.0f} {r['seconds'] * 1e6:7.2f}")
    for name in (*PASSES, "full"):
        t = report[name]
        floor = t["floor_seconds"]
        lines.append(f"{name:8} total {t['graph_seconds'] * 1e6:7.2f} us replayed from a CUDA graph "
                     f"({t['graph_seconds'] / floor:4.1f}x the floor), {t['eager_seconds'] * 1e6:7.2f} us "
                     f"eager ({t['eager_seconds'] / floor:4.1f}x); floor {floor * 1e6:6.2f} us")
    for name, speedup in report.get("eager_speedup", {}).items():
        lines.append(f"{name:8} vs eager PyTorch (same model): {speedup['graph']:4.2f}x faster "
                     f"replayed from CUDA graphs, {speedup['eager']:4.2f}x launched eagerly")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", choices=("shared", "grouped", "eager"), default="shared",
                        help="shared, grouped, or eager (PyTorch's kernels for the shared op)")
    parser.add_argument("--shape", default="100,2048,800", help="M,d,m (grouped: n,d,m)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    parser.add_argument("--gpu", choices=tuple(cost_model.GPUS), default="h200")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        M, d, m = (int(v) for v in args.shape.split(","))
        assert min(M, d, m) > 0
    except (ValueError, AssertionError):
        parser.error(f"--shape: expected three positive ints M,d,m, got {args.shape!r}")
    report = estimate(args.op, M, d, m, args.dtype, args.gpu)
    if args.op == "shared":
        eager = estimate("eager", M, d, m, args.dtype, args.gpu)
        report["eager_speedup"] = {
            name: {"graph": eager[name]["graph_seconds"] / report[name]["graph_seconds"],
                   "eager": eager[name]["eager_seconds"] / report[name]["eager_seconds"]}
            for name in (*PASSES, "full")
        }
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
