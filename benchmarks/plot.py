"""PNG plots of kernel benchmark results: time vs M per (op, d, m, dtype, mode), and the speedup
over eager of every provider per shape.

  python benchmarks/plot.py benchmarks/results/nvidia-h200 [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from _results import load, ok_rows  # noqa: E402

# "gemms" times the op's six GEMMs alone: a bound on what any implementation on that BLAS
# reaches, not an implementation; the legends say so.
LABELS = {"gemms": "gemms (bound: the 6 GEMMs alone)"}
# Speedup ticks, finest series first: the first giving at most 8 ticks in the data's range is
# used, labelled "2x" (the log axis' own minor labels overlap when the range is under a decade).
SPEEDUP_TICKS = (
    (0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2),
    (0.125, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8),
    (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100),
)


def _label(provider: str) -> str:
    return LABELS.get(provider, provider)


def speedup_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Tick values for a log speedup axis spanning [low, high] (see ``SPEEDUP_TICKS``)."""
    for series in SPEEDUP_TICKS:
        inside = [t for t in series if low <= t <= high]
        if low >= series[0] and high <= series[-1] and len(inside) <= most:
            return inside
    return [t for t in SPEEDUP_TICKS[-1] if low <= t <= high] or [1]


def time_vs_m(report: dict, out: Path) -> list[Path]:
    """One figure per (op, dtype, mode): a panel per (d, m), a line per provider."""
    groups = defaultdict(list)
    for r in ok_rows(report):
        groups[(r["op"], r["dtype"], r["mode"])].append(r)
    written = []
    for (op, dt, mode), rows in sorted(groups.items()):
        panels = sorted({(r["d"], r["m"]) for r in rows})
        cols = min(4, len(panels))
        nrows = -(-len(panels) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
        for ax, (d, m) in zip(axes.flat, panels):
            for prov in sorted({r["provider"] for r in rows}):
                pts = sorted((r["M"], r["median_ms"]) for r in rows
                             if r["provider"] == prov and (r["d"], r["m"]) == (d, m))
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=_label(prov))
            ax.set(xscale="log", yscale="log", title=f"d={d} m={m}", xlabel="M", ylabel="ms")
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"{op} op, {dt}, {mode} — {report['device']['name']}")
        fig.tight_layout()
        path = out / f"time_vs_M_{op}_{dt}_{mode}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def speedup(report: dict, out: Path) -> list[Path]:
    """One figure per (op, dtype, mode): bars of speedup over eager per shape and provider."""
    groups = defaultdict(list)
    for r in ok_rows(report):
        if r.get("speedup_vs_eager") and r["provider"] != "eager":
            groups[(r["op"], r["dtype"], r["mode"])].append(r)
    written = []
    for (op, dt, mode), rows in sorted(groups.items()):
        shapes = sorted({(r["M"], r["d"], r["m"]) for r in rows})
        provs = sorted({r["provider"] for r in rows})
        width = 0.8 / len(provs)
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(shapes) * len(provs)), 4))
        for i, prov in enumerate(provs):
            vals = {(r["M"], r["d"], r["m"]): r["speedup_vs_eager"] for r in rows if r["provider"] == prov}
            xs = [j + i * width for j, s in enumerate(shapes) if s in vals]
            ax.bar(xs, [vals[s] for s in shapes if s in vals], width, label=_label(prov))
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
        ax.set_xticklabels([f"{M}x{d}x{m}" for M, d, m in shapes], rotation=60, fontsize=7)
        ax.set(yscale="log", ylabel="speedup over eager", title=f"{op} op, {dt}, {mode}")
        speedups = [r["speedup_vs_eager"] for r in rows]
        low, high = min(min(speedups), 1.0) / 1.1, max(max(speedups), 1.0) * 1.1
        ax.set_ylim(low, high)
        ax.yaxis.set_major_locator(FixedLocator(speedup_ticks(low, high)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"speedup_{op}_{dt}_{mode}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="kernels.json files or folders")
    ap.add_argument("--out", default=None, help="folder for PNGs (default: next to each results file)")
    args = ap.parse_args(argv)
    for report in load(args.results):
        out = Path(args.out) if args.out else Path(report["_path"]).parent / "plots"
        out.mkdir(parents=True, exist_ok=True)
        for path in time_vs_m(report, out) + speedup(report, out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
