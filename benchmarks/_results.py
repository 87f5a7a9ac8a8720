"""Where benchmark results go, and kernels.json loading (schema checked) for plot.py and
report.py."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA = "rpt-fast-bench-kernels/1"
# Without --out every benchmark writes under results/local/<device>/, which git ignores: the
# committed results/<device>/ folders change only when --out names them.
LOCAL_RESULTS = Path(__file__).resolve().parent / "results" / "local"


def load(paths: list[str]) -> list[dict]:
    """Reports from files or folders (a folder: every kernels.json below it)."""
    reports = []
    for p in map(Path, paths):
        files = sorted(p.rglob("kernels.json")) if p.is_dir() else [p]
        for f in files:
            report = json.loads(f.read_text())
            if report.get("schema") != SCHEMA:
                raise ValueError(f"{f}: expected schema {SCHEMA!r}, got {report.get('schema')!r}")
            report["_path"] = str(f)
            reports.append(report)
    if not reports:
        raise FileNotFoundError(f"no kernels.json found in {paths}")
    return reports


def ok_rows(report: dict) -> list[dict]:
    return [r for r in report["results"] if r["status"] == "ok"]
