"""Training benchmark: frozen presets (random weights: T5, or decoder-only such as tiny-llama)
with a residual prompt, built as ``rpt-train`` builds them, trained a few steps on synthetic
batches in plain PyTorch or DeepSpeed ZeRO (with or without parameter offload and gradient
checkpointing), beside PEFT prompt tuning of the same backbone ("peft").

Measures per configuration the median step time, tokens/s (batch x (source + target) tokens
per second; prompt tokens not counted; a decoder-only model reads source and target as one
sequence with the loss on the target) and memory: on CUDA the allocator peak and the device
peak (reserved + context), on CPU the peak RSS of the training steps; under ZeRO-3 also the
peak gathered backbone bytes (module hooks, one extra untimed step). Next to each it prints the
memory planner's prediction (``rpt-train --plan``) and the relative error (predicted /
measured - 1), and checks the design goals when the issue's settings were run on CUDA.
Each configuration runs in its own process; train.json and train.csv under
benchmarks/results/local/<device>/ (or --out) are rewritten after each.

  python benchmarks/bench_train.py              # CPU: t5-tiny, t5-small, fp32, source 128
  python benchmarks/bench_train.py              # GPU: t5-small..t5-xxl, bf16, B 8, source 512
  python benchmarks/bench_train.py --models t5-xl --modes zero3-ckpt,zero3-offload-ckpt
  python benchmarks/bench_train.py --models tiny-llama --modes peft,loop,plain,auto,zero3,zero3-offload
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not os.environ.get("RPT_FAST_INSTALLED"):
    sys.path.insert(0, str(HERE.parent))

from _results import LOCAL_RESULTS  # noqa: E402
from rpt_fast.memory import GIB, Setup, load_arch, plan  # noqa: E402
from rpt_fast.presets import PRESETS  # noqa: E402

SCHEMA = "rpt-fast-bench-train/1"
WORKER = HERE / "_train_worker.py"
MODE_RE = re.compile(r"(plain|zero[0-3]|auto)(-offload)?(-ckpt)?|peft|loop")
# The issue's settings; anything else is listed as a deviation in the results.
ISSUE = {"dtype": "bf16", "batch_size": 8, "seq_len": 512, "num_tokens": 100}
DEFAULTS = {
    "cuda": dict(models="t5-small,t5-base,t5-large,t5-xl,t5-xxl", seq_len=512, target_len=128,
                 dtype="bf16", warmup=2, steps=5, backend="auto", max_live_parameters=100_000_000,
                 threads=0, modes="plain,zero3,zero3-ckpt,zero3-offload,zero3-offload-ckpt"),
    "cpu": dict(models="t5-tiny,t5-small", seq_len=128, target_len=32, dtype="fp32", warmup=1,
                steps=3, backend="eager", max_live_parameters=10_000_000, threads=1,
                modes="plain,zero3,zero3-offload,zero3-offload-ckpt"),
}
QUICK = {
    "cuda": dict(models="t5-xl", warmup=1, steps=3, modes="zero3-ckpt,zero3-offload-ckpt"),
    "cpu": dict(models="t5-tiny", seq_len=32, target_len=8, steps=1, modes="plain,zero3"),
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help=f"comma list of {', '.join(PRESETS)}")
    ap.add_argument("--modes", help="comma list: plain or zero0..zero3, then -offload (zero3), then -ckpt")
    ap.add_argument("--seq-len", type=int, help="source tokens (the prompt comes on top)")
    ap.add_argument("--target-len", type=int, help="target tokens")
    ap.add_argument("--batch-size", type=int, default=ISSUE["batch_size"])
    ap.add_argument("--num-tokens", type=int, default=ISSUE["num_tokens"], help="prompt tokens")
    ap.add_argument("--dtype", choices=("bf16", "fp32"))
    ap.add_argument("--warmup", type=int, help="untimed steps first")
    ap.add_argument("--steps", type=int, help="timed steps (the median is reported)")
    ap.add_argument("--backend", help="prompt-encoder kernel backend (CPU default eager: no C++ build)")
    ap.add_argument("--max-live-parameters", type=float, help="ZeRO-3 live-parameter cap (rpt-train's flag)")
    ap.add_argument("--persistence-threshold", type=float,
                    help="ZeRO-3 stage3_param_persistence_threshold (default: DeepSpeed's, 1e5)")
    ap.add_argument("--threads", type=int,
                    help="torch CPU threads per worker, 0: torch's default (CPU default 1: with 2 threads "
                         "on a busy machine, OpenMP stalls made plain-mode steps up to 80x slower)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help="a DeepSpeed JSON merged into modes spelled MODE@NAME (e.g. zero3@mel with "
                         "mel={\"zero_optimization\":{\"memory_efficient_linear\":true}}); its \"env\" key "
                         "sets environment variables of the worker instead; repeatable")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every configuration this many times, interleaved, and report the median "
                         "step over all rounds (steadier ratios on a shared, loaded machine)")
    ap.add_argument("--quick", action="store_true", help="a small subset (CPU: t5-tiny; GPU: t5-xl)")
    ap.add_argument("--config-timeout", type=float, default=900, help="seconds per configuration")
    ap.add_argument("--out", help="results folder (default benchmarks/results/local/<device>)")
    args = ap.parse_args(argv)
    args.device = _device_type()
    for key, value in {**DEFAULTS[args.device], **(QUICK[args.device] if args.quick else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = _csv(args.models, lambda m: m in PRESETS, "models")
    args.modes = _csv(args.modes, _valid_mode, "modes")
    args.variants = {}
    for item in args.variant:
        name, _, text = item.partition("=")
        try:
            args.variants[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--variant {item!r}: not NAME=JSON ({exc})") from None
    unknown = sorted({m.split("@")[1] for m in args.modes if "@" in m} - set(args.variants))
    if unknown:
        raise SystemExit(f"--modes: no --variant for {unknown}")
    args.max_live_parameters = int(args.max_live_parameters)
    if args.persistence_threshold is not None:
        args.persistence_threshold = int(args.persistence_threshold)
    return args


def _device_type() -> str:
    """Without creating a CUDA context here (it would count in the workers' device peak)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _valid_mode(mode: str) -> bool:
    m = MODE_RE.fullmatch(mode.split("@")[0])
    return bool(m) and (m.group(2) is None or m.group(1) == "zero3") and not (m.group(1) == "auto" and m.group(2))


def _csv(text: str, ok, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if not ok(s)]
    if bad or not items:
        raise SystemExit(f"--{what}: not valid: {bad or text!r}")
    return items


def planner_setup(spec: dict, attention: str, dropout: float) -> Setup:
    """The Setup ``rpt-train --plan`` (autoplan.planner_setup) builds for this run, with the
    attention and dropout the benchmarked backbone really ran with (the plan assumes sdpa)."""
    mode = spec.get("resolved_mode") or spec["mode"].split("@")[0]
    if mode in ("peft", "loop", "auto"):  # one process, the backbone resident (auto: if it failed)
        mode = "plain"
    base, _, flags = mode.partition("-")
    live = spec["max_live_parameters"]
    threshold = spec.get("persistence_threshold_used") or spec["persistence_threshold"]
    extra = {} if threshold is None else {"param_persistence_threshold": threshold}
    return Setup(model=spec["model"], batch_size=spec["batch_size"], source_length=spec["seq_len"],
                 target_length=spec["target_len"], num_tokens=spec["num_tokens"],
                 bf16=spec["dtype"] == "bf16", zero_stage=0 if base == "plain" else int(base[4:]),
                 offload_param="cpu" if "offload" in flags else "none", grad_checkpointing="ckpt" in flags,
                 dropout=dropout, attention=attention, max_live_parameters=live,
                 prefetch_bucket_size=live // 2, max_reuse_distance=live // 2, **extra)


def _err(predicted, measured):
    return predicted / measured - 1 if predicted is not None and measured else None


PREDICTIONS = ("pred_backbone_params", "pred_gathered_bytes", "pred_persistent_bytes", "pred_allocated_bytes",
               "pred_device_total_bytes", "pred_rss_growth_bytes", "err_gathered", "err_allocated",
               "err_device_total", "err_rss_growth")


def compare(row: dict) -> None:
    """Adds the planner's prediction and its relative errors to a measured row (None, with
    the planner's reason in ``planner_note``, for a model it does not know)."""
    dropout = row.get("dropout", load_arch(row["model"]).dropout)  # failed rows: the preset's own
    try:
        p = plan(planner_setup(row, row.get("attention", "sdpa"), dropout))
    except ValueError as exc:
        row.update(dict.fromkeys(PREDICTIONS), planner_note=str(exc))
        return
    gpu, host = p["gpu_terms"], p["host_terms"]
    row["pred_backbone_params"] = p["backbone_params"]
    row["pred_gathered_bytes"] = gpu.get("backbone gathered (live)")
    row["pred_persistent_bytes"] = gpu.get("backbone persistent")
    row["pred_allocated_bytes"] = p["gpu_allocated_peak"]
    row["pred_device_total_bytes"] = p["gpu_total"]
    row["err_gathered"] = _err(row["pred_gathered_bytes"], row.get("gathered_peak_bytes"))
    if row["device"] == "cuda":
        row["err_allocated"] = _err(p["gpu_allocated_peak"], row.get("peak_allocated_bytes"))
        row["err_device_total"] = _err(p["gpu_total"], row.get("device_peak_bytes"))
    else:  # on CPU device and host are one: compare the RSS growth over the pre-build process
        row["pred_rss_growth_bytes"] = p["gpu_allocated_peak"] + host.get("backbone partition (pinned)", 0)
        if row.get("rss_peak_bytes") and row.get("rss_before_build_bytes"):
            row["rss_growth_bytes"] = row["rss_peak_bytes"] - row["rss_before_build_bytes"]
            row["err_rss_growth"] = _err(row["pred_rss_growth_bytes"], row["rss_growth_bytes"])


def _merge_round(previous: dict | None, row: dict) -> dict:
    """One row per configuration over all rounds: every timed step kept, the median over all."""
    row["rounds"] = 1
    if previous is None or previous["status"] != "ok" or row["status"] != "ok":
        return row if previous is None or row["status"] != "ok" else {**row, "rounds": previous["rounds"] + 1}
    steps = previous["step_s"] + row["step_s"]
    median = statistics.median(steps)
    merged = {**row, "step_s": steps, "step_ms_median": median * 1e3, "rounds": previous["rounds"] + 1,
              "step_cpu_s": previous["step_cpu_s"] + row["step_cpu_s"],
              "step_cpu_ms_median": statistics.median(previous["step_cpu_s"] + row["step_cpu_s"]) * 1e3,
              "tokens_per_s": row["batch_size"] * (row["seq_len"] + row["target_len"]) / median,
              "wall_s": previous["wall_s"] + row["wall_s"]}
    for key in ("rss_peak_bytes", "device_peak_bytes"):
        if row.get(key) is not None:
            merged[key] = max(row[key], previous.get(key) or 0)
    return merged


def comparison(rows: list[dict]) -> list[dict]:
    """Per model, every row against PEFT prompt tuning in a plain loop ("peft"): step-time
    ratio, peak RSS / device peak, and the residual MLP's share of the step (its forward +
    backward alone, timed in the "loop" row, over the row's step). Empty without a peft row.
    The step compared is the wall time on CUDA and the process's CPU time on CPU, where the
    machine is shared and wall time mostly measures the other jobs."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = {r["mode"]: r for r in rows if r["model"] == model and r["status"] == "ok"}
        if "peft" not in ok:
            continue
        key = "step_ms_median" if ok["peft"]["device"] == "cuda" else "step_cpu_ms_median"
        base, loop = ok["peft"][key], ok.get("loop", {})
        for mode, r in ok.items():
            peak = r.get("device_peak_bytes") or r.get("rss_peak_bytes")
            entry = {"model": model, "mode": mode, "resolved_mode": r.get("resolved_mode"), "timed": key,
                     "step_ms": r[key], "step_ms_median": r["step_ms_median"], "vs_peft": r[key] / base,
                     "peak_bytes": peak, "loss_last": r["loss_last"]}
            if "plain" in ok:
                entry["vs_no_deepspeed"] = r[key] / ok["plain"][key]
            if loop.get("mlp_ms"):
                entry["mlp_share"] = loop["mlp_ms"] / r[key]
                entry["mlp_eager_share"] = loop["mlp_eager_ms"] / r[key]
            out.append(entry)
        if loop.get("mlp_ms"):
            out.append({"model": model, "mode": "(mlp alone)", "mlp_ms": loop["mlp_ms"],
                        "mlp_eager_ms": loop["mlp_eager_ms"]})
    return out


def comparison_table(entries: list[dict]) -> str:
    timed = "CPU ms" if entries and entries[0].get("timed") == "step_cpu_ms_median" else "step ms"
    head = (f"{'model':10s} {'system':22s} {timed:>9s} {'vs PEFT':>8s} {'vs plain':>8s} "
            f"{'peak MiB':>9s} {'MLP share':>9s}  loss")
    lines = [head, "-" * len(head)]
    for e in entries:
        if "mlp_ms" in e:
            lines.append(f"{e['model']:10s} residual MLP fwd+bwd alone: {e['mlp_ms']:.2f} ms (backend), "
                         f"{e['mlp_eager_ms']:.2f} ms (eager)")
            continue
        name = e["mode"] + (f" ({e['resolved_mode']})" if e.get("resolved_mode") else "")
        vs_plain = f"{e['vs_no_deepspeed']:8.3f}" if "vs_no_deepspeed" in e else f"{'-':>8s}"
        share = f"{100 * e['mlp_share']:8.2f}%" if "mlp_share" in e and e["mode"] != "peft" else f"{'-':>9s}"
        lines.append(f"{e['model']:10s} {name:22s} {e['step_ms']:9.1f} {e['vs_peft']:8.3f} {vs_plain} "
                     f"{_mib(e['peak_bytes'])} {share}  {e['loss_last']:.4f}")
    return "\n".join(lines)


def worker_env(device: str) -> dict:
    """One local rank (port 0: the OS picks); DeepSpeed on the CPU accelerator without CUDA; C++ ops
    (if any get built) in a private extensions folder."""
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT="0")  # one rank: the OS picks the store's port
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(tempfile.gettempdir(), "rpt-bench-train-extensions"))
    return env


def run_config(spec: dict, device: str, timeout: float) -> dict:
    """One configuration in a worker process; a variant's "env" key sets worker variables."""
    env = worker_env(device)
    if spec.get("ds_json") and "env" in spec["ds_json"]:
        ds_json = dict(spec["ds_json"])
        env.update({k: str(v) for k, v in ds_json.pop("env").items()})
        spec = {**spec, "ds_json": ds_json}
    with tempfile.TemporaryDirectory(prefix="rpt-bench-train-") as tmp:
        path = os.path.join(tmp, "result.json")
        try:
            proc = subprocess.run([sys.executable, str(WORKER), json.dumps(spec), path],
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "note": f"killed after {timeout:.0f}s (--config-timeout)"}
        if os.path.exists(path):
            with open(path) as f:
                result = json.load(f)
        else:
            why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"rc={proc.returncode}"
            result = {"status": "error", "note": f"worker {why} without a result (host memory?)"}
        if result["status"] != "ok":
            result["log_tail"] = (proc.stdout + proc.stderr)[-1500:]
        return result


def environment(device: str) -> dict:
    """bench_kernels' environment record, taken in a child (its CUDA queries make a context)."""
    code = ("import json, sys, torch; sys.path.insert(0, sys.argv[1]); import bench_kernels as b; "
            "print(json.dumps(b.environment(torch.device(sys.argv[2]))))")
    out = subprocess.run([sys.executable, "-c", code, str(HERE), device], capture_output=True, text=True,
                         check=True)
    env = json.loads(out.stdout.strip().splitlines()[-1])
    try:  # the "peft" rows' library
        env["versions"]["peft"] = importlib.metadata.version("peft")
    except importlib.metadata.PackageNotFoundError:
        pass
    env["command"] = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    env.pop("triton_interpret", None)
    return env


def deviations(args) -> list[str]:
    s = {"dtype": args.dtype, "batch_size": args.batch_size, "seq_len": args.seq_len,
         "num_tokens": args.num_tokens}
    out = [f"{k} {s[k]} (issue: {v})" for k, v in ISSUE.items() if s[k] != v]
    if args.device != "cuda":
        out.append("CPU: peak RSS and ZeRO-3 gathered bytes stand in for device memory; "
                   "'offload' moves nothing (parameters already live in host memory)")
    return out


def goals(rows: list[dict], args) -> list[str]:
    """The issue's goals, judged only on CUDA rows at the issue's settings; else not measured."""
    at_issue = args.device == "cuda" and not [d for d in deviations(args) if "issue" in d]
    ok = {(r["model"], r["mode"]): r for r in rows if r["status"] == "ok"} if at_issue else {}
    lines = []
    for model, limit, need_offload in (("t5-xl", 8, False), ("t5-xxl", 16, True)):
        cands = [r for (m, mode), r in ok.items() if m == model and (not need_offload or "offload" in mode)]
        what = f"{model} in {limit} GiB{' with offload' if need_offload else ''}"
        if not cands:
            lines.append(f"goal {what}: not measured here")
            continue
        best = min(cands, key=lambda r: r["device_peak_bytes"])
        verdict = "MET" if best["device_peak_bytes"] <= limit * GIB else "NOT met"
        lines.append(f"goal {what}: {verdict}, {best['device_peak_bytes'] / GIB:.2f} GiB device peak "
                     f"({best['mode']}; planner {best['pred_device_total_bytes'] / GIB:.2f} GiB)")
    pairs = [(mode, mode.replace("zero3", "zero3-offload", 1)) for (m, mode) in ok
             if m == "t5-xl" and "offload" not in mode and mode.startswith("zero3")]
    pairs = [(a, b) for a, b in pairs if ("t5-xl", b) in ok]
    for a, b in pairs:
        ratio = ok[("t5-xl", b)]["tokens_per_s"] / ok[("t5-xl", a)]["tokens_per_s"]
        lines.append(f"goal t5-xl offload throughput >= 0.5x: {'MET' if ratio >= 0.5 else 'NOT met'}, "
                     f"{b} / {a} = {ratio:.2f}")
    if not pairs:
        lines.append("goal t5-xl offload throughput >= 0.5x: not measured here")
    return lines


CSV_FIELDS = ["model", "mode", "device", "dtype", "batch_size", "seq_len", "target_len", "num_tokens",
              "status", "step_ms_median", "tokens_per_s", "build_s", "loss_first", "loss_last",
              "peak_allocated_bytes", "pred_allocated_bytes", "err_allocated", "device_peak_bytes",
              "pred_device_total_bytes", "err_device_total", "rss_peak_bytes", "rss_growth_bytes",
              "pred_rss_growth_bytes", "err_rss_growth", "gathered_peak_bytes", "pred_gathered_bytes",
              "err_gathered", "persistent_bytes", "pred_persistent_bytes", "backbone_params",
              "pred_backbone_params", "backbone_bytes", "note", "planner_note"]


def write(report: dict, out: Path) -> None:
    """train.json and train.csv, replaced atomically (a run cut short keeps the last)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json.tmp").write_text(json.dumps(report, indent=1))
    os.replace(out / "train.json.tmp", out / "train.json")
    with open(out / "train.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(report["results"])
    os.replace(out / "train.csv.tmp", out / "train.csv")


def _mib(v) -> str:
    return f"{v / 2**20:9.1f}" if isinstance(v, (int, float)) else f"{'-':>9s}"


def _pct(v) -> str:
    return f"{100 * v:+6.1f}%" if isinstance(v, (int, float)) else f"{'-':>7s}"


def line(r: dict) -> str:
    head = f"{r['model']:10s} {r['mode']:19s}"
    if r["status"] != "ok":
        return f"{head} {r['status']}: {r.get('note', '')[:90]}"
    if r["device"] == "cuda":
        mem = (_mib(r["peak_allocated_bytes"]), _mib(r["pred_allocated_bytes"]), _pct(r["err_allocated"]))
    else:
        mem = (_mib(r.get("rss_growth_bytes")), _mib(r["pred_rss_growth_bytes"]),
               _pct(r.get("err_rss_growth")))
    gathered = (_mib(r.get("gathered_peak_bytes")), _mib(r["pred_gathered_bytes"]), _pct(r["err_gathered"]))
    return (f"{head} {r['step_ms_median']:9.1f} {r['tokens_per_s']:9.0f} " + " ".join(mem) + "  "
            + " ".join(gathered))


def table(report: dict) -> str:
    kind = "alloc peak" if report["device"]["type"] == "cuda" else "RSS growth"
    head = (f"{'model':10s} {'mode':19s} {'step ms':>9s} {'tokens/s':>9s} {kind + ' MiB':>9s} "
            f"{'planner':>9s} {'error':>7s}  {'gathered':>9s} {'planner':>9s} {'error':>7s}")
    lines = [head, "-" * len(head), *map(line, report["results"])]
    lines += [f"deviation: {d}" for d in report["deviations"]]
    lines += [f"note: {n}" for n in report["notes"]]
    lines += report["goals"]
    return "\n".join(lines)


NOTES = [
    "tokens/s = batch x (source + target) tokens / median step time; the prompt is not counted",
    "error = planner prediction / measurement - 1; gathered = peak bytes of gathered or in-flight "
    "non-persistent backbone parameters at module hooks, one extra untimed step",
    "CUDA: alloc peak = torch.cuda.max_memory_allocated over the timed steps; device peak = "
    "max_memory_reserved + memory outside torch's allocator (context) at the end",
    "CPU: RSS growth = peak RSS of the timed steps (VmHWM reset after the build) - RSS before the "
    "build; planner side = its allocator peak + offloaded partition (host and device are one)",
    "plain mode under bf16 keeps fp32 weights with autocast (as rpt-train does); the planner "
    "assumes bf16 weights at ZeRO-0",
    "comparison (with a peft row): on CPU the step compared is the process's CPU time "
    "(time.process_time, 1 torch thread by default): on a shared machine wall time mostly "
    "measures the other jobs",
]


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if args.out else None
    env = environment(args.device)
    if args.threads:
        env["device"]["threads"] = args.threads
    out = out or LOCAL_RESULTS / env["device"]["slug"]
    settings = {k: getattr(args, k) for k in ("models", "modes", "batch_size", "seq_len", "target_len",
                                              "num_tokens", "dtype", "warmup", "steps", "backend",
                                              "max_live_parameters", "persistence_threshold", "threads")}
    settings["variants"], settings["rounds"] = args.variants, args.rounds
    report = {"schema": SCHEMA, **env, "settings": settings, "deviations": deviations(args),
              "notes": NOTES, "loadavg_start": os.getloadavg(), "complete": False, "results": [], "goals": []}
    print(f"bench_train on {env['device']['name']} ({args.device}); writing {out}/train.json", flush=True)
    total = args.rounds * len(args.models) * len(args.modes)
    rows: dict = {}
    for done, (_, model, mode) in enumerate(
            ((r, m, mode) for r in range(args.rounds) for m in args.models for mode in args.modes), 1):
        spec = {"model": model, "mode": mode, **{k: settings[k] for k in (
            "batch_size", "seq_len", "target_len", "num_tokens", "dtype", "warmup", "steps", "backend",
            "max_live_parameters", "persistence_threshold", "threads")}}
        if "@" in mode:
            spec["ds_json"] = args.variants[mode.split("@")[1]]
        start = time.time()
        row = {**spec, "device": args.device, **run_config(spec, args.device, args.config_timeout)}
        row["wall_s"] = round(time.time() - start, 1)
        row = _merge_round(rows.get((model, mode)), row)
        rows[(model, mode)] = row
        compare(row)
        report["results"] = list(rows.values())
        report["loadavg_end"] = os.getloadavg()
        write(report, out)
        print(f"[{done}/{total}] {line(row)}  ({row['wall_s']:.0f}s)", flush=True)
    report["goals"] = goals(report["results"], args)
    report["comparison"] = comparison(report["results"])
    report["complete"] = True
    write(report, out)
    print(table(report))
    if report["comparison"]:
        print(comparison_table(report["comparison"]))
    print(f"wrote {out / 'train.json'} and {out / 'train.csv'}")
    return 0 if all(r["status"] == "ok" for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
