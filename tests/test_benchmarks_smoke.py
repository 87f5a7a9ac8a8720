"""Smoke test of the kernel benchmark tooling: bench_kernels.py on tiny shapes in a subprocess,
the schema of its JSON and CSV, then report.py and plot.py on the results."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
ROW_KEYS = {"op", "regime", "M", "d", "m", "dtype", "mode", "provider", "status", "bytes", "flops",
            "floor_ms"}
OK_KEYS = {"median_ms", "speedup_vs_eager", "speedup_vs_compile", "floor_fraction"}


def _run(*args, timeout=60):
    # Without the interpreter, triton cannot serve CPU tensors: its rows must say "skipped".
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=True, cwd=BENCH.parent, env=env)


def test_bench_report_plot(tmp_path):
    out = tmp_path / "results"
    proc = _run(BENCH / "bench_kernels.py", "--device", "cpu", "--shapes", "6,32,16;3,16,8",
                "--op", "shared,grouped", "--mode", "fwd,full", "--provider",
                "eager,eager-loop,triton,gemms",
                "--budget", "0.005", "--threads", "1", "--out", out)
    assert "eager" in proc.stdout and "ceilings:" in proc.stdout
    report = json.loads((out / "kernels.json").read_text())
    assert report["schema"] == "rpt-fast-bench-kernels/1" and report["complete"] is True
    assert report["device"]["type"] == "cpu" and report["device"]["slug"].startswith("cpu-")
    assert {"torch", "rpt_fast", "triton"} <= set(report["versions"])
    assert "bench_kernels.py" in report["command"] and report["date"]
    c = report["ceilings"]
    assert c["copy_GBps"] > 0 and c["matmul_TFLOPs"]["fp32"] > 0 and c["empty_op_us"] > 0
    rows = report["results"]
    # 2 shapes x 2 modes x (shared: eager, triton, gemms; grouped: eager, eager-loop, triton)
    assert len(rows) == 2 * 2 * 6
    for r in rows:
        assert ROW_KEYS <= set(r), r
        if r["provider"] == "triton":
            assert r["status"] == "skipped" and "CUDA" in r["note"], r
        else:
            assert r["status"] == "ok" and OK_KEYS <= set(r) and r["median_ms"] > 0, r
    eager = [r for r in rows if r["provider"] == "eager"]
    assert all(r["status"] == "ok" and r["speedup_vs_eager"] == 1.0 for r in eager)
    loop = [r for r in rows if r["provider"] == "eager-loop"]
    assert loop and all(r["op"] == "grouped" and r["status"] == "ok" for r in loop)
    gemms = [r for r in rows if r["provider"] == "gemms"]
    assert gemms and all(r["op"] == "shared" and r["status"] == "ok" for r in gemms)
    with open(out / "kernels.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)

    md = tmp_path / "section.md"
    _run(BENCH / "report.py", out, "--out", md)
    text = md.read_text()
    assert text.startswith("### Kernel benchmarks") and "| M | d | m | eager" in text

    plots = tmp_path / "plots"
    _run(BENCH / "plot.py", out, "--out", plots)
    names = {p.name for p in plots.glob("*.png")}
    assert "time_vs_M_shared_fp32_full.png" in names and "speedup_grouped_fp32_fwd.png" in names
    assert all(p.stat().st_size > 1000 for p in plots.glob("*.png"))


def test_bench_host_times_the_triton_path_without_a_gpu(tmp_path):
    proc = _run(BENCH / "bench_host.py", "--shapes", "4,32,16;130,32,16", "--budget", "0.01",
                "--out", tmp_path)
    report = json.loads((tmp_path / "host.json").read_text())
    assert report["launches"] == "stubbed" and report["versions"]["torch"]
    assert [(r["M"], r["d"], r["m"]) for r in report["rows"]] == [(4, 32, 16), (130, 32, 16)]
    for row in report["rows"]:  # the split-K (M <= 128) and the tiled plans both ran
        assert 0 < row["plans_ms"] and 0 < row["forward_ms"] < row["full_ms"]
    assert "fwd+bwd us" in proc.stdout
