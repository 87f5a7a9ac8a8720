"""Markdown section for the README from kernel benchmark results files: environment, ceilings,
and per (op, dtype, mode) a table of median ms per provider with speedups and floor fraction.

  python benchmarks/report.py benchmarks/results/* [--out section.md]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import load, ok_rows  # noqa: E402


def _ms(v):
    return f"{v:.3f}" if v >= 0.01 else f"{v * 1e3:.1f} us"


def section(report: dict) -> str:
    dev, ver, c = report["device"], report["versions"], report["ceilings"]
    lines = [
        f"### Kernel benchmarks: {dev['name']} ({dev['slug']})",
        "",
        f"Date {report['date']}; torch {ver['torch']}, triton {ver.get('triton')}, "
        f"rpt-fast {ver['rpt_fast']}. Command: `{report['command']}`",
        "",
        f"Measured ceilings: copy {c['copy_GBps']:.1f} GB/s, matmul "
        + ", ".join(f"{k} {v:.2f} TFLOP/s" for k, v in c["matmul_TFLOPs"].items())
        + f", empty op {c['empty_op_us']:.1f} us. Floor = max(bytes / copy rate, FLOPs / matmul rate); "
        "'floor' is the fraction of it reached (1.0 = at the floor; (!) above it: faster than the "
        "measured ceilings allow, the data stayed in a cache the copy ceiling does not see or a ceiling "
        "read low; ceilings are the best of "
        f"{c.get('repeats', 1)} measurement{'s' if c.get('repeats', 1) > 1 else ''}).",
        "",
    ]
    groups = defaultdict(list)
    for r in ok_rows(report):
        groups[(r["op"], r["dtype"], r["mode"])].append(r)
    for (op, dt, mode), rows in sorted(groups.items()):
        provs = sorted({r["provider"] for r in rows}, key=lambda p: (p != "eager", p))
        graph = any(r.get("graph_ms") for r in rows)
        lines += [f"**{op} op, {dt}, {mode}** (median ms; x eager; floor fraction"
                  + ("; CUDA-graph replay ms" if graph else "") + ")", ""]
        lines.append("| M | d | m | " + " | ".join(provs) + " |")
        lines.append("|---|---|---|" + "---|" * len(provs))
        by_shape = defaultdict(dict)
        for r in rows:
            by_shape[(r["M"], r["d"], r["m"])][r["provider"]] = r
        for (M, d, m), cells in sorted(by_shape.items()):
            out = []
            for p in provs:
                r = cells.get(p)
                if r is None:
                    out.append("-")
                    continue
                above = " (!)" if r["floor_fraction"] > 1 else ""
                text = f"{_ms(r['median_ms'])} ({r['speedup_vs_eager'] or 0:.2f}x; {r['floor_fraction']:.2f}{above})"
                if r.get("graph_ms"):
                    text += f"; g {_ms(r['graph_ms'])}"
                out.append(text)
            lines.append(f"| {M} | {d} | {m} | " + " | ".join(out) + " |")
        lines.append("")
    skipped = sorted({f"{r['provider']}: {r.get('note', '')}" for r in report["results"]
                      if r["status"] != "ok"})
    if skipped or report["notes"]:
        lines.append("Notes:")
        lines += [f"- {n}" for n in report["notes"]]
        lines += [f"- not measured, {s}" for s in skipped]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="kernels.json files or folders")
    ap.add_argument("--out", default=None, help="write the Markdown here instead of stdout")
    args = ap.parse_args(argv)
    text = "\n".join(section(r) for r in load(args.results))
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
