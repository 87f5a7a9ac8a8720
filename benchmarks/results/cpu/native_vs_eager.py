"""Forward+backward time of rpt_fast.residual_mlp, backend="native" against backend="eager", on
the CPU; writes native_vs_eager.md/.json next to this script. Median of repeated runs, one process.

    python benchmarks/results/cpu/native_vs_eager.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import rpt_fast

GRID_M = (10, 100, 1000, 8192)
GRID_D = (768, 2048)
GRID_BOTTLENECK = (400, 800)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _make_step(backend: str, rows: int, d: int, m: int):
    """One forward+backward of ``backend`` (x, the prompt, is trained too)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, d, generator=gen).requires_grad_()
    params = [
        torch.randn(s, generator=gen).mul_(0.02).requires_grad_()
        for s in ((m, d), (m,), (d, m), (d,), (d,), (d,))
    ]
    dy = torch.randn(rows, d, generator=gen)
    tensors = [x, *params]

    def step():
        for t in tensors:
            t.grad = None
        rpt_fast.residual_mlp(*tensors, backend=backend).backward(dy)

    return step


def _median_seconds(rows: int, d: int, m: int, budget_s: float, clock) -> tuple[float, float]:
    """Median seconds of (eager, native), their runs interleaved so load changes hit both."""
    steps = {name: _make_step(name, rows, d, m) for name in ("eager", "native")}
    times = {name: [] for name in steps}
    for step in steps.values():
        for _ in range(3):
            step()
    start = time.perf_counter()
    while len(times["eager"]) < 5 or (time.perf_counter() - start < budget_s and len(times["eager"]) < 300):
        for name, step in steps.items():
            t0 = clock()
            step()
            times[name].append(clock() - t0)
    return statistics.median(times["eager"]), statistics.median(times["native"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short time budget per point")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall: perf_counter; cpu: process_time (user+system CPU seconds of all threads, "
        "immune to other processes' load; with one thread, the work itself)",
    )
    parser.add_argument("--name", default="native_vs_eager", help="stem of the .md/.json written")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = 0.5 if args.quick else 2.0
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    rows = []
    for d in GRID_D:
        for m in GRID_BOTTLENECK:
            for M in GRID_M:
                eager, native = _median_seconds(M, d, m, budget, clock)
                rows.append({"M": M, "d": d, "m": m, "eager_ms": eager * 1e3,
                             "native_ms": native * 1e3, "speedup": eager / native})
                print(f"M={M:5d} d={d:4d} m={m:3d} eager {eager*1e3:9.3f} ms  "
                      f"native {native*1e3:9.3f} ms  speedup {eager/native:5.2f}x", flush=True)
    meta = {
        "device": _cpu_model(),
        "threads": torch.get_num_threads(),
        "load_average_1_5_15": Path("/proc/loadavg").read_text().split()[:3],
        "torch": torch.__version__,
        "dtype": "float32",
        "clock": args.clock,
        "command": "python " + " ".join(sys.argv),
        "measure": "median of interleaved forward+backward runs; x and all 6 parameters require grad",
    }
    out = Path(__file__).with_name(args.name)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    lines = [f"# native vs eager, forward+backward, float32, CPU", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| M | d | m | eager ms | native ms | speedup |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['M']} | {r['d']} | {r['m']} | {r['eager_ms']:.3f} | {r['native_ms']:.3f} | "
              f"{r['speedup']:.2f}x |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
