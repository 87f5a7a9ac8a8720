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
from rpt_fast.train.optim import lr_lambda  # noqa: E402
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
    steps run here: only model, optimizer and engine are built). Mode "auto" is rpt-train's
    default (the planner chooses); "peft" and "loop" use its plain settings for the backbone."""
    base, _, flags = spec["mode"].split("@")[0].partition("-")
    user = dict(spec.get("ds_json") or {})
    if spec.get("persistence_threshold") is not None:
        user.setdefault("zero_optimization", {})["stage3_param_persistence_threshold"] = spec["persistence_threshold"]
    user_json = None
    if user and base not in ("plain", "peft", "loop"):
        user_json = os.path.join(output_dir, "ds_user.json")
        with open(user_json, "w") as f:
            json.dump(user, f)
    deepspeed = base not in ("plain", "peft", "loop")
    if base == "auto":
        stage, offload = "auto", "auto"
    else:
        stage = int(base[4:]) if deepspeed else 0
        offload = "cpu" if "offload" in flags else "none"
    return TrainConfig(
        model=spec["model"], task="synthetic", max_train_examples=spec["batch_size"],
        max_eval_examples=1, max_input_length=spec["seq_len"], max_target_length=spec["target_len"],
        num_tokens=spec["num_tokens"], backend=spec["backend"], batch_size=spec["batch_size"],
        max_steps=spec["warmup"] + spec["steps"], eval_interval=0, log_interval=1,
        deepspeed=deepspeed, zero_stage=stage, offload_param=offload, bf16=spec["dtype"] == "bf16",
        gradient_checkpointing="ckpt" in flags, max_live_parameters=spec["max_live_parameters"],
        deepspeed_config=user_json, output_dir=output_dir, progress=False,
    ).validate()


class PlainLoop:
    """What a user writes without rpt-train: the same backbone (same preset weights) with a PEFT
    prompt-tuning adapter ("peft") or a ResidualPromptModel ("loop"), torch AdamW, clipping at
    1.0, one process. Quacks like the parts of ``Run`` that measure() uses."""

    def __init__(self, cfg: TrainConfig, kind: str):
        from rpt_fast.prompt import ResidualPromptModel
        from rpt_fast.train.backbone import build_backbone

        self.info, self.zero3, self.engine, self.autocast_dtype = _CPU_INFO, False, None, None
        backbone, _ = build_backbone(cfg, None, 0)
        torch.manual_seed(cfg.seed)
        if kind == "peft":
            from peft import PromptTuningConfig, get_peft_model

            task_type = "SEQ_2_SEQ_LM" if backbone.config.is_encoder_decoder else "CAUSAL_LM"
            self.model = get_peft_model(backbone, PromptTuningConfig(
                task_type=task_type, num_virtual_tokens=cfg.num_tokens))
            self.model.backbone = backbone
            params = [p for p in self.model.parameters() if p.requires_grad]
        else:
            self.model = ResidualPromptModel(backbone, cfg.num_tokens, cfg.bottleneck, backend=cfg.backend,
                                             seed=cfg.seed)
            params = self.model.trainable_parameters()
        self.params, self.max_grad_norm = params, cfg.max_grad_norm
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # rpt-train's schedule and clipping, so the "loop" row's losses equal the rpt-train rows'
        factor = lr_lambda(cfg.lr_scheduler, cfg.warmup_steps, cfg.total_steps(1))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def optimizer_step(self) -> None:
        """The update from the gradients of the last backward (as ``Run.optimizer_step``)."""
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


_CPU_INFO = None


def mlp_ms(encoder, repeats: int = 10) -> float:
    """Median CPU ms (process time; wall ms on CUDA) of one forward + backward of the prompt
    encoder alone (what the residual MLP adds to a step; the prompt's own cost is in every
    system)."""
    clock = time.perf_counter if encoder.prompt.is_cuda else time.process_time
    times = []
    for _ in range(repeats + 1):
        t0 = clock()
        encoder().sum().backward()
        _sync(encoder.prompt.device)
        times.append(clock() - t0)
    encoder.zero_grad(set_to_none=True)
    return statistics.median(times[1:]) * 1e3


def synthetic_batch(run: Run, spec: dict) -> dict:
    """Random source and target ids. T5: the target is the decoder's labels; decoder-only: one
    sequence, source then target, labelled on the target (as rpt-train's data)."""
    config = run.model.backbone.config
    g = torch.Generator().manual_seed(0)
    shape, target = (spec["batch_size"], spec["seq_len"]), (spec["batch_size"], spec["target_len"])
    source, labels = torch.randint(2, config.vocab_size, shape, generator=g), \
        torch.randint(2, config.vocab_size, target, generator=g)
    if not config.is_encoder_decoder:
        source, labels = torch.cat((source, labels), 1), torch.cat((torch.full(shape, -100), labels), 1)
    batch = {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": labels}
    return {k: v.to(run.info.device) for k, v in batch.items()}


def train_step(run: Run, batch: dict) -> float:
    """One optimizer step on ``batch``, as ``Run.train_step`` takes it without accumulation."""
    module = run.engine if run.engine is not None else run.model
    dtype = run.autocast_dtype
    with torch.autocast(run.info.device.type, dtype=dtype, enabled=dtype is not None):
        loss = module(**batch).loss
    if run.engine is not None:
        run.engine.backward(loss)
        run.engine.step()
    else:
        loss.backward()
        run.optimizer_step()
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
        kind = spec["mode"].split("@")[0].partition("-")[0]
        if kind == "auto":
            from rpt_fast.train import autoplan

            cfg, reason = autoplan.resolve(cfg, info.world_size, device)
            m["auto_choice"] = reason
            m["resolved_mode"] = f"zero{cfg.zero_stage}" + ("-offload" if cfg.offload_param != "none" else "") \
                + ("-ckpt" if cfg.gradient_checkpointing else "")
        m["rss_before_build_bytes"] = _proc_status_bytes("VmRSS")
        start = time.perf_counter()
        if kind in ("peft", "loop"):
            global _CPU_INFO
            _CPU_INFO = info
            run = PlainLoop(cfg, kind)
        else:
            run = Run(cfg, info)
        m["build_s"] = round(time.perf_counter() - start, 2)
        if getattr(run, "zero3", False):
            m["persistence_threshold_used"] = run.ds_config["zero_optimization"]["stage3_param_persistence_threshold"]
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
        times, cpu_times, losses = [], [], []
        for i in range(spec["warmup"] + spec["steps"]):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            losses.append(train_step(run, batch))
            _sync(device)
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
            m.update(_device_peaks(device))
        # CPU seconds of this process per step: on a shared, loaded CPU machine wall time mostly
        # measures the other jobs; the work done by this one is its CPU time.
        m["step_cpu_s"] = [round(t, 4) for t in cpu_times]
        m["step_cpu_ms_median"] = statistics.median(cpu_times) * 1e3
        if kind == "loop":  # the residual MLP's share: its forward + backward alone
            from rpt_fast.modules import ResidualPromptEncoder

            m["mlp_ms"] = mlp_ms(run.model.prompt_encoder)
            d_model = run.model.prompt_encoder.prompt.shape[1]
            eager = ResidualPromptEncoder(spec["num_tokens"], d_model, cfg.bottleneck, backend="eager")
            m["mlp_eager_ms"] = mlp_ms(eager)
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
