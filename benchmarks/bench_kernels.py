"""Kernel benchmark of the residual encoder ops: eager PyTorch, torch.compile and every rpt-fast
backend, forward / backward / full, plain launches and (CUDA) CUDA-graph replay.

Reports the median time, speedups over eager and over compile, and the distance to the floor
(bytes over the measured copy bandwidth, FLOPs over the measured matmul rate, launches x the
measured empty-launch time), plus peak memory on CUDA. On an H200, H100 or A100 the triton and
eager rows also carry the cost model's estimate (``rpt_fast.ops.plan``: ``model_ms`` for plain
launches, ``model_graph_ms`` for CUDA-graph replay) beside the measurement. Writes a table to
stdout, kernels.json + kernels.csv and the plots (``plot.py``, into ``plots/``) under
benchmarks/results/local/<device>/ (or --out).

  python benchmarks/bench_kernels.py                   # CPU: the quick set (native targets)
  python benchmarks/bench_kernels.py --regime all      # GPU: the full grid
  python benchmarks/bench_kernels.py --shapes 10,64,32 --provider eager,native --mode fwd
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import itertools
import json
import os
import platform
import re
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if not os.environ.get("RPT_FAST_INSTALLED"):
    sys.path.insert(1, str(HERE.parent))  # a source checkout without pip install

import torch  # noqa: E402

import _ceilings  # noqa: E402
from _cost import op_cost  # noqa: E402
from _results import LOCAL_RESULTS  # noqa: E402
from _providers import PROVIDERS, inputs, make, mode_fn  # noqa: E402
from _timing import count_cuda_launches, cuda_graph_ms, median_ms  # noqa: E402

import rpt_fast  # noqa: E402
from rpt_fast.ops import cost_model  # noqa: E402
from rpt_fast.ops import plan as launch_plan  # noqa: E402

SCHEMA = "rpt-fast-bench-kernels/1"
# Rows faster than their floor are kept as measured, and marked: the table's floor% ends in "!",
# report.py's floor fraction in "(!)".
ABOVE_FLOOR = ("faster than the measured ceilings allow: its data stayed in a cache the copy ceiling "
               "does not see, or a ceiling read low (each is the best of 3 measurements)")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("fwd", "bwd", "full")


def _grid(Ms, ds, ms):
    return [(M, d, m) for M in Ms for d in ds for m in ms]


# (op, regime) -> shapes (M, d, m); for the grouped op M is the number of rows (= groups).
REGIMES = {
    "prompt": _grid((10, 100), (768, 1024, 2048, 4096), (400, 800, 1600)),
    "adapter": _grid((4096, 16384), (1024, 4096), (64, 256, 1024)),
    "native": _grid((10, 100, 1000, 8192), (768, 2048), (400, 800)),
}
QUICK = {
    "prompt": _grid((10, 100), (768, 2048), (800,)),
    "adapter": _grid((4096,), (1024,), (256,)),
    "native": REGIMES["native"],
}
GROUPED_CPU_QUICK = _grid((10, 100), (768,), (400,))


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu-" + _cpu_model()
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("(r)", "")).strip("-")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "rpt_fast": rpt_fast.__version__}
    for pkg in ("triton", "transformers", "deepspeed"):
        try:  # the installed version, without importing (deepspeed's import is slow and noisy)
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    dev = {"type": device.type, "slug": device_slug(device),
           "name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
           "threads": torch.get_num_threads()}
    if device.type == "cuda":
        dev["cuda"] = torch.version.cuda
    return {"device": dev, "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
            "triton_interpret": os.environ.get("TRITON_INTERPRET", "0")}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--op", default="shared,grouped", help="shared,grouped")
    ap.add_argument("--regime", default=None,
                    help="prompt,adapter,native or all (default: native on CPU, prompt,adapter on GPU)")
    ap.add_argument("--shapes", default=None, help="explicit shapes 'M,d,m;M,d,m' (overrides --regime)")
    ap.add_argument("--dtype", default=None, help="fp32,bf16,fp16 (default: fp32 on CPU, all on GPU)")
    ap.add_argument("--provider", default=None, help=f"subset of {','.join(PROVIDERS)}")
    ap.add_argument("--mode", default=None, help="fwd,bwd,full (default: full on CPU, all on GPU)")
    ap.add_argument("--quick", action="store_true", help="a small subset of each regime")
    ap.add_argument("--no-graph", action="store_true", help="skip CUDA-graph replay timings")
    ap.add_argument("--compile", default=None, choices=("static", "dynamic"),
                    help="torch.compile per shape (static; GPU default) or once with dynamic shapes "
                         "(CPU default, to keep runs short)")
    ap.add_argument("--budget", type=float, default=None, help="seconds of reps per measurement")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (1 avoids OpenMP stalls on a busy machine)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results/local/<device>)")
    return ap.parse_args(argv)


def _csv_list(text, allowed, what):
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise SystemExit(f"--{what}: expected a comma list of {tuple(allowed)}, got {text!r}")
    return items


def plan_runs(args, device) -> tuple[list, list[str]]:
    """[(op, regime, (M, d, m), dtype_name, mode)] and the notes on what was left out."""
    gpu = device.type == "cuda"
    notes = []
    ops = _csv_list(args.op, ("shared", "grouped"), "op")
    dtypes = _csv_list(args.dtype or ("fp32,bf16,fp16" if gpu else "fp32"), DTYPES, "dtype")
    modes = _csv_list(args.mode or (",".join(MODES) if gpu else "full"), MODES, "mode")
    if args.shapes:
        try:
            shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
            assert all(len(s) == 3 and min(s) > 0 for s in shapes)
        except (ValueError, AssertionError):
            raise SystemExit(f"--shapes: expected 'M,d,m;M,d,m' of positive ints, got {args.shapes!r}")
        per_op = {op: [("custom", s) for s in shapes] for op in ops}
    else:
        regimes = args.regime or ("prompt,adapter" if gpu else "native")
        regimes = list(REGIMES) if regimes == "all" else _csv_list(regimes, REGIMES, "regime")
        table = QUICK if (args.quick or not gpu) else REGIMES
        if not gpu and not args.quick:
            notes.append("CPU: quick subset of each regime; the full grid is for the GPU")
        per_op = {}
        for op in ops:
            rows = []
            for regime in regimes:
                if op == "grouped" and regime != "prompt":
                    if regime == "native" and not gpu:
                        rows += [("prompt", s) for s in GROUPED_CPU_QUICK]
                    else:
                        notes.append(f"grouped op: regime {regime} skipped (one MLP per row "
                                     "is the prompt regime only)")
                    continue
                rows += [(regime, s) for s in table[regime]]
            per_op[op] = list(dict.fromkeys(rows))
    per_run = [[(op, regime, shape, dt, mode) for regime, shape in per_op[op] for dt in dtypes for mode in modes]
               for op in ops]
    # The ops interleaved, so that a run cut short by a time limit has rows of each.
    runs = [run for group in itertools.zip_longest(*per_run) for run in group if run is not None]
    return runs, notes


def providers_for(op, args, device, notes) -> list[str]:
    names = _csv_list(args.provider, PROVIDERS, "provider") if args.provider else list(PROVIDERS)
    if op == "shared" and "eager-loop" in names:
        names.remove("eager-loop")
    if op == "grouped" and "gemms" in names:
        names.remove("gemms")
    if device.type != "cuda" and "compile-max" in names and not args.provider:
        names.remove("compile-max")
        notes.append("compile-max (max-autotune) skipped on CPU by default: it autotunes GPU "
                     "kernels; ask for it with --provider")
    return names


def free_memory_bytes(device: torch.device) -> int:
    """Free memory of the device (CUDA) or available RAM (CPU, from /proc/meminfo)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def model_gpu(device: torch.device) -> str | None:
    """The cost model's key ("h200", "h100", "a100") for this CUDA device, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    return next((key for key in cost_model.GPUS if key in name), None)


def model_estimate(op: str, provider: str, M: int, d: int, m: int, dt: str, mode: str,
                   gpu: str | None) -> dict:
    """The cost model's times for a triton or eager row (empty where it has no plan)."""
    if gpu is None or provider not in ("triton", "eager"):
        return {}
    which = "eager" if provider == "eager" else op
    if which == "eager" and op != "shared":
        return {}
    try:
        report = launch_plan.estimate(which, M, d, m, dt, gpu)
    except SystemExit:  # the grouped op without a launch plan
        return {}
    passes = {"fwd": ("forward",), "bwd": ("backward",), "full": ("full",)}[mode]
    return {"model_ms": sum(report[p]["eager_seconds"] for p in passes) * 1e3,
            "model_graph_ms": sum(report[p]["graph_seconds"] for p in passes) * 1e3}


def working_set_bytes(op: str, M: int, d: int, m: int, e: int) -> int:
    """Inputs, their gradients and the saved activations, with room for eager temporaries:
    what one full step holds at once (the grouped op's weights grow with M)."""
    g = M if op == "grouped" else 1
    return 3 * e * (g * (2 * m * d + m + 3 * d) + M * (3 * d + 2 * m))


def measure_one(fn_mode, device, use_graph, budget):
    kwargs = {"budget_s": budget} if budget else {}
    ms = median_ms(fn_mode, device, **kwargs)
    row = {"median_ms": ms}
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn_mode()
        torch.cuda.synchronize()
        row["peak_mem_bytes"] = torch.cuda.max_memory_allocated(device) - base
        row["launches"] = count_cuda_launches(fn_mode)
        if use_graph:
            try:
                row["graph_ms"] = cuda_graph_ms(fn_mode, **kwargs)
            except Exception as exc:  # capture can fail (host syncs, compile): record why
                row["graph_note"] = f"graph capture failed: {type(exc).__name__}: {str(exc)[:120]}"
    return row


def run(args, out: Path | None = None) -> dict:
    """Measures every planned case; with ``out``, rewrites the results files after each row so
    a run cut short (time limit) keeps what it measured ("complete": false)."""
    device = torch.device(args.device)
    env = environment(device)
    runs, notes = plan_runs(args, device)
    dtypes = sorted({dt for *_, dt, _ in runs}, key=list(DTYPES).index)
    ceilings = _ceilings.measure(device, {d: DTYPES[d] for d in dtypes},
                                 **({"budget_s": args.budget} if args.budget else {}))
    if device.type != "cuda":
        notes.append("CPU: peak memory per provider is not measured (no allocator statistics)")
        notes.append("CPU: the launch floor is not reported (no kernel launches); empty_op_us "
                     "is the per-op dispatch cost")
    dynamic = (args.compile or ("static" if device.type == "cuda" else "dynamic")) == "dynamic"
    if dynamic:
        notes.append("torch.compile with dynamic shapes (compiled once per op, dtype and mode, "
                     "not per shape) to keep the run short; --compile static for per-shape")
    results = []
    gen = torch.Generator().manual_seed(0)
    compiled = {}
    provider_lists = {op: providers_for(op, args, device, notes) for op in {r[0] for r in runs}}
    gpu = model_gpu(device)
    if device.type == "cuda" and gpu is None:
        notes.append("no cost-model constants for this GPU: model_ms not reported")
    for op, regime, (M, d, m), dt, mode in runs:
        dtype = DTYPES[dt]
        e = torch.finfo(dtype).bits // 8
        need, free = working_set_bytes(op, M, d, m, e), free_memory_bytes(device)
        if need <= free // 2:  # else too big for this machine: every provider row says so
            tensors = inputs(op, M, d, m, dtype, device, gen)
            dy = torch.randn(M, d, generator=gen).to(device=device, dtype=dtype)
        nbytes, flops = op_cost(op, mode, M, d, m, e)
        floor_ms = max(nbytes / (ceilings["copy_GBps"] * 1e9),
                       flops / (ceilings["matmul_TFLOPs"][dt] * 1e12)) * 1e3
        for name in provider_lists[op]:
            row = {"op": op, "regime": regime, "M": M, "d": d, "m": m, "dtype": dt, "mode": mode,
                   "provider": name, "bytes": nbytes, "flops": flops, "floor_ms": floor_ms,
                   **model_estimate(op, name, M, d, m, dt, mode, gpu)}
            if need > free // 2:
                row.update(status="skipped", note=f"needs about {need / 2**30:.1f} GiB, more than "
                           f"half the free memory ({free / 2**30:.1f} GiB)")
                results.append(row)
                continue
            try:
                key = (op, name, dt, mode) if dynamic else (op, name, dt, mode, M, d, m)
                if key not in compiled:
                    if name.startswith("compile") and not dynamic:
                        torch._dynamo.reset()  # fresh cache: no silent eager fallback at the limit
                    compiled[key] = make(op, name, dynamic=dynamic)
                fn_mode = mode_fn(compiled[key], tensors, mode, dy)
                fn_mode()  # first call: compiles / builds, and says if the backend cannot run
                row.update(measure_one(fn_mode, device, device.type == "cuda" and not args.no_graph,
                                       args.budget))
                row["status"] = "ok"
            except rpt_fast.BackendUnavailableError as exc:
                row.update(status="skipped", note=str(exc)[:200])
            except Exception as exc:  # one provider failing must not lose the others' results
                row.update(status="error", note=f"{type(exc).__name__}: {str(exc)[:200]}")
            results.append(row)
            if out is not None:
                write(_report(env, ceilings, notes, results, complete=False), out)
    return _report(env, ceilings, notes, results, complete=True)


def _report(env, ceilings, notes, results, complete) -> dict:
    _derive(results, ceilings)
    return {"schema": SCHEMA, **env, "complete": complete, "ceilings": ceilings,
            "notes": list(dict.fromkeys(notes)), "results": results}


def _derive(results, ceilings):
    """Speedups over eager and compile of the same case, fraction of the floor, launch floor."""
    def case(r):
        return (r["op"], r["M"], r["d"], r["m"], r["dtype"], r["mode"])

    ref = {(case(r), r["provider"]): r.get("median_ms") for r in results if r["status"] == "ok"}
    for r in results:
        if r["status"] != "ok":
            continue
        for base in ("eager", "compile"):
            t = ref.get((case(r), base))
            r[f"speedup_vs_{base}"] = t / r["median_ms"] if t else None
        r["floor_fraction"] = r["floor_ms"] / r["median_ms"]
        if r.get("launches") is not None:
            r["launch_floor_ms"] = r["launches"] * ceilings["empty_op_us"] * 1e-3


CSV_FIELDS = ["op", "regime", "M", "d", "m", "dtype", "mode", "provider", "status", "median_ms",
              "graph_ms", "model_ms", "model_graph_ms", "speedup_vs_eager", "speedup_vs_compile",
              "floor_ms", "floor_fraction",
              "launches", "launch_floor_ms", "peak_mem_bytes", "bytes", "flops", "note"]


def write(report: dict, out: Path) -> None:
    """Writes kernels.json and kernels.csv atomically (a run killed mid-write leaves the last)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "kernels.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out / "kernels.json")
    with open(out / "kernels.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(report["results"])
    os.replace(out / "kernels.csv.tmp", out / "kernels.csv")


def write_plots(out: Path) -> list | None:
    """plot.py's PNGs of the results in ``out`` into ``out/plots``; None without matplotlib."""
    try:
        import plot
    except ImportError:
        return None
    plot.main([str(out)])
    return sorted((out / "plots").glob("*.png"))


def _f(v, fmt):
    return format(v, fmt) if isinstance(v, (int, float)) else "-"


def table(report: dict) -> str:
    head = (f"{'op':7s} {'dtype':5s} {'M':>6s} {'d':>5s} {'m':>5s} {'mode':4s} {'provider':11s} "
            f"{'ms':>9s} {'graph':>9s} {'model':>9s} {'x eager':>7s} {'x comp':>7s} {'floor%':>6s} "
            f"{'peakMB':>7s}")
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        if r["status"] != "ok":
            lines.append(f"{r['op']:7s} {r['dtype']:5s} {r['M']:6d} {r['d']:5d} {r['m']:5d} "
                         f"{r['mode']:4s} {r['provider']:11s} {r['status']}: {r.get('note', '')[:60]}")
            continue
        peak = r.get("peak_mem_bytes")
        lines.append(
            f"{r['op']:7s} {r['dtype']:5s} {r['M']:6d} {r['d']:5d} {r['m']:5d} {r['mode']:4s} "
            f"{r['provider']:11s} {r['median_ms']:9.3f} {_f(r.get('graph_ms'), '9.3f'):>9s} "
            f"{_f(r.get('model_ms'), '9.3f'):>9s} "
            f"{_f(r.get('speedup_vs_eager'), '7.2f'):>7s} {_f(r.get('speedup_vs_compile'), '7.2f'):>7s} "
            f"{100 * r['floor_fraction']:6.1f}{'!' if r['floor_fraction'] > 1 else ' '}"
            f"{_f(peak / 2**20 if peak is not None else None, '7.1f'):>7s}")
    if any(r.get("floor_fraction", 0) > 1 for r in report["results"]):
        lines.append(f"floor% over 100 (!): {ABOVE_FLOOR}")
    c = report["ceilings"]
    lines.append(f"ceilings: copy {c['copy_GBps']:.1f} GB/s, matmul "
                 + ", ".join(f"{k} {v:.2f} TFLOP/s" for k, v in c["matmul_TFLOPs"].items())
                 + f", empty op {c['empty_op_us']:.1f} us")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else LOCAL_RESULTS / device_slug(torch.device(args.device))
    report = run(args, out)
    write(report, out)
    print(table(report))
    print(f"wrote {out / 'kernels.json'} and {out / 'kernels.csv'}")
    plots = write_plots(out)
    print(f"wrote {len(plots)} plots under {out / 'plots'}" if plots is not None
          else "plots not written: matplotlib is not installed (pip install matplotlib)")
    return 0 if all(r["status"] != "error" for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
