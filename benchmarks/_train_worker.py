"""One bench_train.py configuration, in a process of its own, built as ``rpt-train`` builds it
(TrainConfig -> init_distributed -> trainer.Run), trained on synthetic token batches.

Why a process per configuration: peaks (RSS high-water mark, CUDA allocator statistics,
DeepSpeed's process group) cannot leak from one configuration into the next, and a crash or
OOM loses one row only.

  python benchmarks/_train_worker.py '<spec json>' result.json
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if not os.environ.get("RPT_FAST_INSTALLED"):
    sys.path.insert(1, os.path.dirname(HERE))

import torch  # noqa: E402

from rpt_fast.train.config import TrainConfig  # noqa: E402
from rpt_fast.train.distributed import init_distributed, shutdown  # noqa: E402
from rpt_fast.train.trainer import Run  # noqa: E402


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Linux resets the VmHWM high-water mark to the current RSS on "5" in clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def train_config(spec: dict, output_dir: str) -> TrainConfig:
    """The TrainConfig ``rpt-train`` would get for this configuration (no evaluation or export
    steps run here: only model, optimizer and engine are built)."""
    base, _, flags = spec["mode"].partition("-")
    user_json = None
    if spec.get("persistence_threshold") is not None and base == "zero3":
        user_json = os.path.join(output_dir, "ds_user.json")
        with open(user_json, "w") as f:
            json.dump({"zero_optimization": {
                "stage3_param_persistence_threshold": spec["persistence_threshold"]}}, f)
    return TrainConfig(
        model=spec["model"], task="synthetic", max_train_examples=spec["batch_size"],
        max_eval_examples=1, max_input_length=spec["seq_len"], max_target_length=spec["target_len"],
        num_tokens=spec["num_tokens"], backend=spec["backend"], batch_size=spec["batch_size"],
        max_steps=spec["warmup"] + spec["steps"], eval_interval=0, log_interval=1,
        deepspeed=base != "plain", zero_stage=int(base[4:]) if base != "plain" else 0,
        offload_param="cpu" if "offload" in flags else "none", bf16=spec["dtype"] == "bf16",
        gradient_checkpointing="ckpt" in flags, max_live_parameters=spec["max_live_parameters"],
        deepspeed_config=user_json, output_dir=output_dir, progress=False,
    ).validate()


def synthetic_batch(run: Run, spec: dict) -> dict:
    vocab = run.model.backbone.config.vocab_size
    g = torch.Generator().manual_seed(0)
    shape, target = (spec["batch_size"], spec["seq_len"]), (spec["batch_size"], spec["target_len"])
    batch = {"input_ids": torch.randint(2, vocab, shape, generator=g),
             "attention_mask": torch.ones(shape, dtype=torch.long),
             "labels": torch.randint(2, vocab, target, generator=g)}
    return {k: v.to(run.info.device) for k, v in batch.items()}


def train_step(run: Run, batch: dict) -> float:
    """One optimizer step as Run.forward_loss + Run.optimizer_step take it, on ``batch``."""
    module = run.engine if run.engine is not None else run.model
    dtype = run.autocast_dtype
    with torch.autocast(run.info.device.type, dtype=dtype, enabled=dtype is not None):
        loss = module(**batch).loss
    run.optimizer_step(loss)
    return loss.item()  # waits for the device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_peaks(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"rss_peak_bytes": _proc_status_bytes("VmHWM")}
    free, total = torch.cuda.mem_get_info(device)
    non_torch = total - free - torch.cuda.memory_reserved(device)  # context, libraries
    reserved = torch.cuda.max_memory_reserved(device)
    return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "peak_reserved_bytes": reserved, "non_torch_bytes": non_torch,
            "device_peak_bytes": reserved + non_torch}


def measure(spec: dict, m: dict) -> None:
    """Fills ``m`` as it goes, so a failure still reports what was measured before it."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    with tempfile.TemporaryDirectory(prefix="rpt-bench-train-") as out:
        cfg = train_config(spec, out)
        info = init_distributed(cfg.deepspeed)
        device = info.device
        m["rss_before_build_bytes"] = _proc_status_bytes("VmRSS")
        start = time.perf_counter()
        run = Run(cfg, info)
        m["build_s"] = round(time.perf_counter() - start, 2)
        backbone = run.model.backbone
        m["attention"] = backbone.config._attn_implementation
        m["dropout"] = float(getattr(backbone.config, "dropout_rate", 0.0))
        m["backbone_params"] = sum(getattr(p, "ds_numel", p.numel()) for p in backbone.parameters())
        m["backbone_bytes"] = sum(getattr(p, "ds_numel", p.numel()) * p.element_size()
                                  for p in backbone.parameters())
        m["backbone_dtype"] = str(next(backbone.parameters()).dtype).removeprefix("torch.")
        m["rss_after_build_bytes"] = _proc_status_bytes("VmRSS")
        m["rss_peak_reset"] = _reset_rss_peak()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        batch = synthetic_batch(run, spec)
        run.model.train()
        times, losses = [], []
        for i in range(spec["warmup"] + spec["steps"]):
            _sync(device)
            t0 = time.perf_counter()
            losses.append(train_step(run, batch))
            _sync(device)
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - t0)
            m.update(_device_peaks(device))
        m["step_s"] = [round(t, 4) for t in times]
        m["step_ms_median"] = statistics.median(times) * 1e3
        tokens = spec["batch_size"] * (spec["seq_len"] + spec["target_len"])
        m["tokens_per_s"] = tokens / statistics.median(times)
        m["loss_first"], m["loss_last"] = losses[0], losses[-1]
        if run.zero3:  # one more, untimed step with the gathered-bytes hooks
            from _train_gathered import GatheredPeak

            with GatheredPeak(backbone) as gathered:
                train_step(run, batch)
            m["gathered_peak_bytes"] = gathered.peak_bytes
            m["persistent_bytes"] = gathered.persistent_bytes
        shutdown(info, cfg.deepspeed)


def main() -> int:
    spec, result_path = json.loads(sys.argv[1]), sys.argv[2]
    m: dict = {}
    try:
        measure(spec, m)
        m["status"] = "ok"
    except torch.OutOfMemoryError as exc:
        m.update(status="oom", note=str(exc).splitlines()[0][:300])
        m.update(_device_peaks(torch.device("cuda" if torch.cuda.is_available() else "cpu")))
    except Exception as exc:  # reported in the row; the parent goes on with the next one
        traceback.print_exc()
        m.update(status="error", note=f"{type(exc).__name__}: {exc}"[:300])
    with open(result_path, "w") as f:
        json.dump(m, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
