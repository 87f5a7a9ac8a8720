"""Smoke test of the training benchmark: bench_train.py on t5-tiny (PEFT in a plain loop,
rpt-train's plain mode and ZeRO-3, one step) in a subprocess; the schema of its JSON and CSV,
ZeRO-3 gathered bytes that are neither nothing nor the whole backbone (small live-parameter and
persistence limits), and the comparison against PEFT; the same comparison on tiny-llama (PEFT
CAUSAL_LM prompt tuning, a causal batch)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"model", "mode", "device", "status", "step_ms_median", "tokens_per_s", "backbone_params",
            "pred_backbone_params", "pred_allocated_bytes", "err_gathered", "wall_s"}


@pytest.mark.timeout(180)
def test_bench_train_tiny(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "ext")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--models", "t5-tiny",
         "--modes", "peft,plain,zero3", "--seq-len", "16", "--target-len", "4", "--batch-size", "2",
         "--num-tokens", "4", "--warmup", "0", "--steps", "1", "--max-live-parameters", "30000",
         "--persistence-threshold", "1000", "--config-timeout", "90", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tokens/s" in proc.stdout and "deviation: seq_len 16" in proc.stdout
    report = json.loads((out / "train.json").read_text())
    assert report["schema"] == "rpt-fast-bench-train/1" and report["complete"] is True
    assert {"torch", "transformers", "deepspeed"} <= set(report["versions"])
    assert "bench_train.py" in report["command"] and report["date"] and report["loadavg_start"]
    assert report["settings"]["models"] == ["t5-tiny"] and report["goals"]
    peft, plain, zero3 = report["results"]
    for row in (peft, plain, zero3):
        assert ROW_KEYS <= set(row), row
        assert row["status"] == "ok" and row["step_ms_median"] > 0 and row["tokens_per_s"] > 0, row
        assert row["backbone_params"] == row["pred_backbone_params"]
        assert row["rss_peak_bytes"] > 0
    assert (peft["mode"], plain["mode"], zero3["mode"]) == ("peft", "plain", "zero3")
    assert plain.get("gathered_peak_bytes") is None and plain["err_gathered"] is None
    assert 0 < zero3["gathered_peak_bytes"] < zero3["backbone_bytes"]
    assert zero3["persistent_bytes"] == zero3["pred_persistent_bytes"]
    expected_error = zero3["pred_gathered_bytes"] / zero3["gathered_peak_bytes"] - 1
    assert zero3["err_gathered"] == pytest.approx(expected_error)
    with open(out / "train.csv") as f:
        assert [r["mode"] for r in csv.DictReader(f)] == ["peft", "plain", "zero3"]
    by_mode = {e["mode"]: e for e in report["comparison"]}
    assert by_mode["peft"]["vs_peft"] == 1.0 and by_mode["plain"]["vs_no_deepspeed"] == 1.0
    assert by_mode["zero3"]["vs_peft"] == pytest.approx(zero3["step_cpu_ms_median"] / peft["step_cpu_ms_median"])
    assert "vs PEFT" in proc.stdout


@pytest.mark.timeout(180)
def test_bench_train_decoder_only_beside_peft(tmp_path):
    """tiny-llama: PEFT CAUSAL_LM prompt tuning and rpt-train's plain mode on one causal batch."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "ext")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--models", "tiny-llama", "--modes", "peft,plain",
         "--seq-len", "16", "--target-len", "4", "--batch-size", "2", "--num-tokens", "4", "--warmup", "0",
         "--steps", "1", "--config-timeout", "90", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "train.json").read_text())
    peft, plain = report["results"]
    for row in (peft, plain):
        assert row["status"] == "ok" and row["step_cpu_ms_median"] > 0 and row["backbone_params"] == 123_200, row
        # the planner's prediction where it knows the family, else its reason
        assert row["pred_backbone_params"] == row["backbone_params"] or row["planner_note"], row
    by_mode = {e["mode"]: e for e in report["comparison"]}
    assert by_mode["plain"]["vs_peft"] == pytest.approx(plain["step_cpu_ms_median"] / peft["step_cpu_ms_median"])
