"""Residual prompt tuning against plain prompt tuning across learning rates: the paper's
stability claim, measured on what a CPU can run in minutes.

Each run is ``rpt-train``'s own training (:class:`rpt_fast.train.trainer.Run`, plain PyTorch,
one process) on the built-in synthetic task with a **random-weight** ``t5-tiny`` backbone
(dropout 0) and the official recipe's defaults (constant LR, no clipping, AdamW, vocab init):
``--reparam residual`` and ``--reparam none`` at every learning rate and seed, scored at the
last step by greedy generation (accuracy on the eval set) and by the mean training loss of the
last 10 steps. A random backbone is not T5: this measures optimization stability of the two
reparameterizations on a learnable toy problem, not SuperGLUE scores (see the README for the
commands that reproduce the paper's setup with real checkpoints and data).

  python benchmarks/bench_recipe.py                      # the committed CPU sweep
  python benchmarks/bench_recipe.py --lrs 0.03,0.3 --seeds 0 --steps 50   # a quick look

Writes ``recipe.json``, ``recipe.csv``, ``recipe.md`` (the table) and ``plots/recipe_lr.png``
under ``benchmarks/results/local/<cpu|cuda>/`` (or ``--out``); the JSON is rewritten after every
run, so an interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _results import LOCAL_RESULTS  # noqa: E402  (this script's folder is on sys.path)

METHODS = ("residual", "none")
LABELS = {"residual": "residual prompt tuning", "none": "prompt tuning"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--lrs", default="0.003,0.01,0.03,0.1,0.3,1,3", help="comma-separated learning rates")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--methods", default=",".join(METHODS), help="residual and/or none")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-tokens", type=int, default=20)
    p.add_argument("--bottleneck", type=int, default=800)
    p.add_argument("--eval-examples", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: no oversubscription on a shared machine)")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results/local/<device>)")
    p.add_argument("--render", action="store_true", help="only rewrite the table and plot from <out>/recipe.json")
    return p.parse_args(argv)


def run_one(method: str, lr: float, seed: int, args, workdir: str) -> dict:
    """One ``rpt-train`` run; returns its final accuracy and loss."""
    from rpt_fast.train.config import TrainConfig
    from rpt_fast.train.distributed import init_distributed
    from rpt_fast.train.trainer import Run

    cfg = TrainConfig(
        model="t5-tiny", task="synthetic", reparam=method, lr=lr, seed=seed, batch_size=args.batch_size,
        num_tokens=args.num_tokens, bottleneck=args.bottleneck, max_steps=args.steps, max_eval_examples=args.eval_examples,
        max_target_length=4, backbone_dropout=0.0, deepspeed=False, progress=False, eval_interval=0,
        output_dir=os.path.join(workdir, f"{method}-{lr:g}-{seed}"),
    ).validate()
    run = Run(cfg, init_distributed(False))
    run.model.train()
    torch.manual_seed(seed)
    losses, started = [], time.perf_counter()
    for step in range(run.total_steps):
        losses.append(run.train_step(step).item())
    train_s = time.perf_counter() - started
    scores = run.evaluate()
    tail = losses[-10:]
    finite = all(math.isfinite(x) for x in tail)
    return {"method": method, "lr": lr, "seed": seed, "steps": run.total_steps,
            "accuracy": scores["accuracy"], "final_loss": statistics.fmean(tail) if finite else float("nan"),
            "first_loss": losses[0], "train_s": round(train_s, 2)}


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (method, lr)."""
    out = []
    for method in METHODS:
        for lr in sorted({r["lr"] for r in rows}):
            group = [r for r in rows if r["method"] == method and r["lr"] == lr]
            if not group:
                continue
            acc = [r["accuracy"] for r in group]
            loss = [r["final_loss"] for r in group]
            out.append({"method": method, "lr": lr, "seeds": len(group), "accuracy_mean": statistics.fmean(acc),
                        "accuracy_min": min(acc), "accuracy_max": max(acc),
                        "final_loss_mean": statistics.fmean(loss) if all(map(math.isfinite, loss)) else float("nan"),
                        "solved": sum(a >= 0.95 for a in acc)})
    return out


def markdown(summary: list[dict], meta: dict) -> str:
    lrs = sorted({s["lr"] for s in summary})
    cell = {(s["method"], s["lr"]): s for s in summary}
    lines = [
        "# Residual prompt tuning vs prompt tuning across learning rates (CPU)",
        "",
        f"Synthetic task, **random-weight t5-tiny backbone** (dropout 0), {meta['num_tokens']} prompt tokens, "
        f"bottleneck {meta['bottleneck']}, batch {meta['batch_size']}, {meta['steps']} steps, constant LR, "
        f"no clipping, seeds {meta['seeds']}; accuracy by greedy generation on {meta['eval_examples']} eval "
        f"examples at the last step. Cells: mean accuracy [min-max over seeds] (runs with accuracy >= 0.95) / "
        f"mean loss of the last 10 steps. Measured {meta['date']} on {meta['machine']}, total "
        f"{meta['total_s']:.0f} s.",
        "",
        "| lr | " + " | ".join(LABELS[m] for m in METHODS if any(k[0] == m for k in cell)) + " |",
        "|---:|" + "---|" * len({k[0] for k in cell}),
    ]
    for lr in lrs:
        row = [f"{lr:g}"]
        for method in METHODS:
            s = cell.get((method, lr))
            if s is None:
                continue
            row.append(f"{s['accuracy_mean']:.3f} [{s['accuracy_min']:.2f}-{s['accuracy_max']:.2f}] "
                       f"({s['solved']}/{s['seeds']}) / {s['final_loss_mean']:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, marker in zip(METHODS, "os"):
        rows = [s for s in summary if s["method"] == method]
        if not rows:
            continue
        lrs = [s["lr"] for s in rows]
        mean = [s["accuracy_mean"] for s in rows]
        err = [[m - s["accuracy_min"] for m, s in zip(mean, rows)], [s["accuracy_max"] - m for m, s in zip(mean, rows)]]
        axes[0].errorbar(lrs, mean, yerr=err, marker=marker, capsize=3, label=LABELS[method])
        axes[1].plot(lrs, [s["final_loss_mean"] for s in rows], marker=marker, label=LABELS[method])
    axes[0].set(xscale="log", xlabel="learning rate", ylabel="eval accuracy (mean, min-max over seeds)", ylim=(-0.05, 1.05))
    axes[1].set(xscale="log", yscale="log", xlabel="learning rate", ylabel="train loss, last 10 steps (mean)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Synthetic task, random-weight t5-tiny (CPU)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = args.out or str(LOCAL_RESULTS / device)
    os.makedirs(out, exist_ok=True)
    if args.render:
        with open(os.path.join(out, "recipe.json"), encoding="utf-8") as handle:
            saved = json.load(handle)
        write_reports(saved["runs"], saved["meta"], out)
        return
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    methods = args.methods.split(",")
    for method in methods:
        if method not in METHODS:
            raise SystemExit(f"bench_recipe: error: --methods: expected residual and/or none, got {method!r}")
    meta = {"steps": args.steps, "batch_size": args.batch_size, "num_tokens": args.num_tokens,
            "bottleneck": args.bottleneck, "eval_examples": args.eval_examples, "seeds": seeds,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} thread(s))",
            "backbone": "random-weight t5-tiny (rpt_fast.presets), dropout 0"}
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for seed in seeds:
            for lr in lrs:
                for method in methods:
                    row = run_one(method, lr, seed, args, workdir)
                    rows.append(row)
                    print(f"{LABELS[method]:>24s} lr {lr:<6g} seed {seed}: accuracy {row['accuracy']:.3f}, "
                          f"loss {row['first_loss']:.3f} -> {row['final_loss']:.3f} ({row['train_s']:.1f}s)", flush=True)
                    meta["total_s"] = time.perf_counter() - started
                    with open(os.path.join(out, "recipe.json"), "w", encoding="utf-8") as handle:
                        json.dump({"meta": meta, "runs": rows, "summary": summarize(rows)}, handle, indent=1)
    write_reports(rows, meta, out)


def write_reports(rows: list[dict], meta: dict, out: str) -> None:
    """recipe.csv, recipe.md (printed too) and plots/recipe_lr.png from the runs."""
    summary = summarize(rows)
    with open(os.path.join(out, "recipe.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(summary, meta)
    with open(os.path.join(out, "recipe.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
    plot(summary, os.path.join(out, "plots", "recipe_lr.png"))
    print(table)


if __name__ == "__main__":
    main()
