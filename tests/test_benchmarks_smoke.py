"""Smoke test of the kernel benchmark tooling: bench_kernels.py on tiny shapes in a subprocess,
the schema of its JSON and CSV, then report.py and plot.py on the results; rows above their
floor marked, the plots' speedup axis and legend, the default output folder."""

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert c["repeats"] == 3  # each ceiling the best of 3
    rows = report["results"]
    # The ops interleaved case by case (a run cut short has both): 2 shapes x 2 modes each.
    assert [op for op, _ in itertools.groupby(r["op"] for r in rows)] == ["shared", "grouped"] * 4
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


def _report(floor_fraction):
    rows = [{"op": "shared", "M": 10, "d": 768, "m": 400, "dtype": "fp32", "mode": "full", "provider": p,
             "status": "ok", "median_ms": ms, "speedup_vs_eager": 1.0 / ms, "floor_fraction": f}
            for p, ms, f in (("eager", 1.0, 0.5), ("gemms", 0.7, 0.7), ("native", 0.8, floor_fraction))]
    return {"schema": "rpt-fast-bench-kernels/1", "device": {"name": "a CPU", "slug": "cpu-x"},
            "versions": {"torch": "2", "triton": "3", "rpt_fast": "0.1"}, "date": "today", "command": "bench",
            "ceilings": {"copy_GBps": 20.0, "matmul_TFLOPs": {"fp32": 0.3}, "empty_op_us": 2.0, "repeats": 3},
            "notes": [], "results": rows}


@pytest.fixture
def bench_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_kernels
    import plot
    import report

    return bench_kernels, plot, report


def test_rows_above_their_floor_are_marked_not_clamped(bench_modules):
    bench_kernels, _, report = bench_modules
    for fraction, marked in ((1.15, True), (0.9, False)):
        text = report.section(_report(fraction))
        assert ("1.15 (!)" in text) is marked and text.count("(!)") == 1 + marked  # + the legend
        table = bench_kernels.table(_report(fraction))
        assert ("115.0!" in table) is marked and ("floor% over 100 (!)" in table) is marked


def test_speedup_plot_labels_its_ticks_once_and_names_the_gemms_bound(bench_modules, monkeypatch, tmp_path):
    _, plot, _ = bench_modules
    figures = []
    monkeypatch.setattr(plot.plt, "close", figures.append)
    plot.speedup(_report(0.5), tmp_path)
    ax = figures[0].axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "gemms (bound: the 6 GEMMs alone)" in legend and "native" in legend
    major = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert major == ["1x", "1.1x", "1.25x", "1.5x"], major  # speedups 1.25 and 1.43
    assert not any(t.get_text() for t in ax.yaxis.get_minorticklabels())


def test_results_go_to_a_git_ignored_folder_unless_out_names_one():
    ignored = (BENCH.parent / ".gitignore").read_text().splitlines()
    assert "benchmarks/results/local/" in ignored
    scripts = ("bench_kernels.py", "bench_host.py", "bench_train.py", "bench_recipe.py")
    procs = [subprocess.Popen([sys.executable, str(BENCH / script), "--help"], stdout=subprocess.PIPE, text=True)
             for script in scripts]  # side by side: each imports torch
    for script, proc in zip(scripts, procs):
        help_text = " ".join(proc.communicate(timeout=120)[0].split())
        assert "benchmarks/results/local/<device>" in help_text, script
