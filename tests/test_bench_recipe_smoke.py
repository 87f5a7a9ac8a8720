"""Smoke test of benchmarks/bench_recipe.py: a 2-run sweep of a few steps writes its JSON, CSV,
table and plot with one row per run and one summary row per (method, lr)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_recipe.py"


def test_bench_recipe_writes_results(tmp_path):
    subprocess.run([sys.executable, str(BENCH), "--lrs", "0.3", "--seeds", "0", "--steps", "2", "--num-tokens", "4",
                    "--bottleneck", "8", "--eval-examples", "4", "--out", str(tmp_path)],
                   check=True, capture_output=True, text=True, timeout=240, cwd=BENCH.parents[1])
    report = json.loads((tmp_path / "recipe.json").read_text())
    assert [(r["method"], r["steps"]) for r in report["runs"]] == [("residual", 2), ("none", 2)]
    assert {(s["method"], s["lr"], s["seeds"]) for s in report["summary"]} == {("residual", 0.3, 1), ("none", 0.3, 1)}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in report["runs"])
    with open(tmp_path / "recipe.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert "| 0.3 |" in (tmp_path / "recipe.md").read_text()
    assert (tmp_path / "plots" / "recipe_lr.png").stat().st_size > 0
