"""The training run: one loop for DeepSpeed (ZeRO 0-3, any number of ranks) and plain PyTorch
(one process), so the two modes can be checked against each other step by step.

Loss normalization: each rank's micro-batch loss is rescaled to ``sum / global_token_count *
world_size``; after DeepSpeed averages gradients over ranks this is exactly the token-mean loss
of the whole global batch, the quantity the plain mode computes in one process. With gradient
accumulation the global batch is ``gradient_accumulation_steps`` micro-batches whose shares add
up to the same token mean (DeepSpeed's own 1/GAS loss scaling is turned off for that).
"""

from __future__ import annotations

import json
import math
import os
import random
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from . import autoplan, resume, state, stopping
from . import summary as run_summary
from .backbone import build_backbone, load_tokenizer
from .checkpoint import FOLDER as CHECKPOINTS
from .checkpoint import CheckpointError, step_name
from .config import TrainConfig, field_names
from .data import StepSampler, collate_train, encode_examples
from .distributed import DistInfo, all_reduce_mean, local_world_size, barrier, broadcast_object, init_distributed, shutdown
from .ds_config import build_ds_config
from .evaluate import evaluate, generation_length
from .optim import build_optimizer, lr_lambda
from .rank_errors import on_every_rank
from .rank_errors import propagate as propagate_failures
from .shared_fs import require_shared
from .selfcheck import self_check
from .zero3 import partition_trainables_off_nvme, register_fused_parameters
from .export import export_prompt, gathered, load_trainable, trainable_tensors

METRICS_FILE = "metrics.jsonl"


def _output_dir(cfg: TrainConfig, info: DistInfo) -> str:
    """``--output-dir`` as this rank names it (every rank gets the same flags), else a new
    folder rank 0 names; every rank must see the same folder (:func:`require_shared`). Made
    once the run's inputs passed their checks (:mod:`preflight`); :func:`train` removes it again
    if the run fails before writing anything into it."""
    path = cfg.output_dir
    if path is None:
        if info.is_main:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base = os.path.join("rpt-runs", f"{stamp}-{cfg.task}")
            path, n = base, 1
            while os.path.exists(path):
                n += 1
                path = f"{base}-{n}"
        path = broadcast_object(info, path)
    path = os.path.abspath(path)
    if info.is_main:
        os.makedirs(path, exist_ok=True)
    barrier(info)
    require_shared(info, path)
    return path


class MetricsLog:
    """Rank 0's JSONL of train and eval records; on resume, records after the checkpoint's step
    (written by the interrupted run) are dropped so the file reads as one run."""

    def __init__(self, path: str, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        self.tensorboard = None  # a tensorboard.TensorBoardLog with --report-to tensorboard
        if enabled and resume_step is not None and os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                kept = [line for line in handle if line.strip() and json.loads(line)["step"] <= resume_step]
            with open(path, "w", encoding="utf-8") as handle:
                handle.writelines(kept)
        elif enabled and resume_step is None:
            open(path, "w", encoding="utf-8").close()

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.tensorboard is not None:
                self.tensorboard.write(record)


def _fingerprint(cfg: TrainConfig, info: DistInfo) -> dict:
    """Settings a resumed run must share with the saved one to continue exactly."""
    keys = ("model", "task", "data_dir", "num_tokens", "bottleneck", "separate", "seed", "batch_size",
            "deepspeed", "zero_stage", "max_train_examples", "max_input_length", "max_target_length",
            "reparam", "layer_norm", "residual", "activation", "gradient_accumulation_steps", "few_shot",
            "eval_split", "wsc_format", "chat_template")
    return {**{k: getattr(cfg, k) for k in keys}, "world_size": info.world_size}


def _max_new_tokens(cfg: TrainConfig, default: int, encoded, info: DistInfo) -> int:
    """``--max-new-tokens``, else ``default`` (:func:`~rpt_fast.train.evaluate.generation_length`);
    warns when that cannot produce the longest target."""
    length = cfg.max_new_tokens or default
    longest = max((e.num_label_tokens - 1 for e in encoded), default=0)  # without the eos
    if longest > length and info.is_main:
        print(f"warning: generating at most {length} new tokens, but the longest eval target has {longest} "
              f"with this tokenizer: longer targets cannot be generated whole (set --max-new-tokens)", flush=True)
    return length


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class Run:
    """A built run: model, optimizer, data, and where things go."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, task=None, out: str | None = None):
        from ..prompt import ResidualPromptModel
        from .preflight import load_task

        if info.device.type == "cpu":
            # Denormal floats (from the attention softmax, once the prompt trains) slowed CPU
            # steps by ~10% (t5-small, vs PEFT in the same loop); flushing them to zero costs
            # nothing in accuracy. GPUs flush in their own kernels.
            torch.set_flush_denormal(True)
        # "auto" ZeRO settings chosen from the memory planner and this device's memory
        cfg, reason = autoplan.resolve(cfg, info.world_size, info.device, local_world_size())
        if reason and info.is_main:
            print(f"rpt-train: {reason}", flush=True)
        self.cfg, self.info = cfg, info
        self.out = out or _output_dir(cfg, info)
        self.tokenizer = load_tokenizer(cfg)
        self.task = task if task is not None else load_task(cfg)
        self.ds_config = build_ds_config(cfg, info.world_size, pin_memory=info.device.type == "cuda") \
            if cfg.deepspeed else None
        backbone, self._hf_zero3 = build_backbone(cfg, self.ds_config, info.rank)
        encoder_decoder = bool(getattr(backbone.config, "is_encoder_decoder", False))
        encoding = {"max_input_length": cfg.max_input_length, "max_target_length": cfg.max_target_length,
                    "chat_template": cfg.chat_template}
        self.train_data = encode_examples(self.task.train, self.tokenizer, encoder_decoder=encoder_decoder, **encoding)
        self.eval_data = encode_examples(self.task.eval, self.tokenizer, encoder_decoder=encoder_decoder, **encoding)
        self.test_data = encode_examples(self.task.test, self.tokenizer, encoder_decoder=encoder_decoder, **encoding)
        default = generation_length(self.task, self.train_data, encoder_decoder=encoder_decoder,
                                    max_target_length=cfg.max_target_length)
        self.max_new_tokens = _max_new_tokens(cfg, default, self.eval_data + self.test_data, info)
        self.sampler = StepSampler(len(self.train_data), cfg.batch_size, cfg.seed, info.rank, info.world_size,
                                   accumulation=cfg.gradient_accumulation_steps)
        self.total_steps = cfg.total_steps(self.sampler.steps_per_epoch)

        _seed_everything(cfg.seed)  # the prompt's MLP init: same in every mode
        model = ResidualPromptModel(
            backbone, cfg.num_tokens, cfg.bottleneck, separate=cfg.separate, dropout=cfg.prompt_dropout,
            init=cfg.prompt_init, backend=cfg.backend, seed=cfg.seed, reparam=cfg.reparam,
            layer_norm=cfg.layer_norm, residual=cfg.residual, activation=cfg.activation,
        )
        if not cfg.deepspeed:
            model.to(info.device)
        self.model = model
        optimizer = build_optimizer(model, cfg)
        factor = lr_lambda(cfg.lr_scheduler, cfg.warmup_steps, self.total_steps)
        if cfg.deepspeed:
            import deepspeed

            partition_trainables_off_nvme(model.prompt_encoder, self.ds_config)  # fp32 under --bf16
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model, optimizer=optimizer, config=self.ds_config,
                lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor),
            )
        else:
            self.engine, self.optimizer = None, optimizer
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self.zero3 = cfg.deepspeed and self.ds_config["zero_optimization"]["stage"] == 3
        if self.zero3:
            register_fused_parameters(model)
        self.autocast_dtype = torch.bfloat16 if cfg.bf16 and not cfg.deepspeed else None
        self.checkpoints = os.path.join(self.out, CHECKPOINTS)
        self.fingerprint = _fingerprint(cfg, info)
        self.earlier_train_time = 0.0  # training time of the processes before a resume

    def forward_loss(self, step: int, micro: int = 0) -> torch.Tensor:
        """This rank's share of the global batch's token-mean loss from micro-batch ``micro``
        (see the module docstring)."""
        indices = self.sampler.rank_batch(step, micro)
        global_tokens = sum(self.train_data[i].num_label_tokens for i in self.sampler.global_batch(step))
        local_tokens = sum(self.train_data[i].num_label_tokens for i in indices)
        batch = collate_train([self.train_data[i] for i in indices], self.tokenizer.pad_token_id)
        batch = {k: v.to(self.info.device) for k, v in batch.items()}
        module = self.engine if self.engine is not None else self.model
        with torch.autocast(self.info.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = module(**batch).loss
        return loss * (local_tokens * self.info.world_size / global_tokens)

    def train_step(self, step: int) -> torch.Tensor:
        """One optimizer step over the global batch of ``step`` (0-based); returns its loss."""
        total = None
        for micro in range(self.cfg.gradient_accumulation_steps):
            loss = self.forward_loss(step, micro)
            if self.engine is not None:
                # The share is already normalized over the global batch: no extra 1/GAS.
                self.engine.backward(loss, scale_wrt_gas=False)
                self.engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary
            else:
                loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        if self.engine is None:
            self.optimizer_step()
        return total

    def optimizer_step(self) -> None:
        """The plain mode's update from the accumulated gradients."""
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.trainable_parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def evaluate(self, test: bool = False) -> dict[str, float]:
        """Scores the eval set, or with ``test`` the held-out test half (``eval_split="halves"``)."""
        cfg = self.cfg
        data, examples = (self.test_data, self.task.test) if test else (self.eval_data, self.task.eval)
        # Default: 4x the training batch and at least 8 per rank (generation saves no activations).
        batch = cfg.eval_batch_size or max(cfg.total_eval_batch_size, 8 * self.info.world_size)
        # Generation: the task's length; likelihood: the longest label string scored.
        length = self.max_new_tokens if cfg.eval_mode == "generate" else cfg.max_target_length
        return evaluate(
            self.model, self.task, data, self.tokenizer, self.info, examples=examples,
            batch_size=batch, max_new_tokens=length,
            synced_gpus=self.zero3 and self.info.world_size > 1, autocast_dtype=self.autocast_dtype,
            mode=cfg.eval_mode, max_input_length=cfg.max_input_length, chat_template=cfg.chat_template,
        )

    def save(self, step: int, best: dict | None, train_time_s: float = 0.0) -> None:
        """Collective: a checkpoint of the state after ``step``."""
        trainer_state = {"step": step, "fingerprint": self.fingerprint, "train_time_s": round(train_time_s, 3)}
        state.save(self.checkpoints, step, self.info, trainer_state=trainer_state, best=best, engine=self.engine,
                   model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                   keep=self.cfg.save_total_limit)

    def resume(self, folder: str, changes: dict) -> tuple[int, dict | None]:
        """Loads the checkpoint in ``folder`` and records the resume (with the settings it
        ``changes``) in the run folder's resumes.jsonl."""
        trainer_state, best = state.load(folder, self.info, fingerprint=self.fingerprint, engine=self.engine,
                                         model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        self.earlier_train_time = float(trainer_state.get("train_time_s", 0.0))  # before the resume
        step = int(trainer_state["step"])
        if self.info.is_main:
            resume.record(self.out, step, changes, self.cfg, run_summary.command_line())
        return step, best


def _format_scores(scores: dict[str, float], primary: str) -> str:
    rest = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if k != primary)
    return f"{primary} {scores[primary]:.3f}" + (f" ({rest})" if rest else "")


def _run_loop(run: Run, resume_from: str | None = None, changes: dict | None = None,
              stop: stopping.StopRequest | None = None) -> dict | stopping.Stopped:
    """Trains from step 0, or from the verified checkpoint folder ``resume_from`` (with the
    settings ``changes`` the resume makes); returns the summary, or on a ``stop`` request (from
    :func:`stopping.stop_requests`) the :class:`~stopping.Stopped` to raise once the process
    group is shut down."""
    cfg, info = run.cfg, run.info
    stop = stop or stopping.StopRequest(info)  # no handlers: never asked to stop
    start_step, best = run.resume(resume_from, changes or {}) if resume_from else (0, None)
    resumed = resume_from is not None
    if not resumed:
        _seed_everything(cfg.seed + info.rank)  # dropout streams; resume restores them instead
    log = MetricsLog(os.path.join(run.out, METRICS_FILE), info.is_main, start_step if resumed else None)
    if cfg.report_to == "tensorboard" and info.is_main:
        from .tensorboard import FOLDER, TensorBoardLog

        log.tensorboard = TensorBoardLog(os.path.join(run.out, FOLDER), start_step if resumed else None)
    primary = run.task.primary_metric
    say = tqdm.write if info.is_main else (lambda _msg: None)
    if resumed:
        say(f"resumed from step {start_step} ({run.checkpoints})")

    def do_eval(step: int) -> None:
        nonlocal best
        scores = run.evaluate()
        log.write({"type": "eval", "step": step, **scores})
        if best is None or scores[primary] > best["score"]:
            with gathered(run.model):
                best = {"step": step, "score": scores[primary], "metrics": scores,
                        "tensors": trainable_tensors(run.model)}
        say(f"step {step}: {_format_scores(scores, primary)}  [best {best['score']:.3f} at step {best['step']}]")

    if cfg.eval_interval and start_step == 0:
        do_eval(0)
    run.model.train()
    bar = tqdm(total=run.total_steps, initial=start_step, disable=not (info.is_main and cfg.progress),
               desc="train", dynamic_ncols=True)
    started = time.time()

    def save(step: int, stop_checkpoint: bool = False) -> None:
        with stop.saving(stop_checkpoint):  # a signal never abandons a checkpoint half written
            run.save(step, best, train_time_s=run.earlier_train_time + time.time() - started)

    window, window_steps, last_loss = torch.zeros((), device=info.device), 0, math.nan
    first_loss, saved_step = None, start_step
    for step in range(start_step + 1, run.total_steps + 1):
        lr = run.scheduler.get_last_lr()[0]  # the rate this step uses
        loss = run.train_step(step - 1)
        window += loss.detach().float()
        window_steps += 1
        bar.update(1)
        if step % cfg.log_interval == 0 or step == run.total_steps:
            last_loss = all_reduce_mean(info, window).item() / window_steps
            first_loss = last_loss if first_loss is None else first_loss
            window.zero_()
            window_steps = 0
            epoch = (step - 1) // run.sampler.steps_per_epoch
            log.write({"type": "train", "step": step, "loss": last_loss, "lr": lr, "epoch": epoch,
                       "elapsed_s": round(time.time() - started, 3)})
            bar.set_postfix(loss=f"{last_loss:.4f}")
        if cfg.eval_interval and (step % cfg.eval_interval == 0 or step == run.total_steps):
            do_eval(step)
        if cfg.save_interval and step % cfg.save_interval == 0 and step < run.total_steps:
            save(step)
            saved_step = step
        signum = stop.agreed() if step < run.total_steps else 0  # the last step just finishes
        if signum:
            if saved_step != step:
                save(step, stop_checkpoint=True)
            bar.close()
            if log.tensorboard is not None:
                log.tensorboard.close()
            folder = os.path.join(run.checkpoints, step_name(step))
            return stop.stopped(signum, step, run.total_steps, folder, run.out, info.world_size)
    bar.close()
    elapsed = time.time() - started
    if saved_step != run.total_steps:  # the final state, for a resume that trains on (--max-steps)
        save(run.total_steps)
    if best is None:  # no evaluation: the final prompt is the one exported
        with gathered(run.model):
            best = {"step": run.total_steps, "score": None, "metrics": {}, "tensors": trainable_tensors(run.model)}
    else:
        load_trainable(run.model, best["tensors"])
    test_metrics = None
    if run.task.test:  # the official val/test split: the best prompt, scored once on the test half
        test_metrics = run.evaluate(test=True)
        log.write({"type": "test", "step": best["step"], **test_metrics})
        say(f"test (best prompt, step {best['step']}): {_format_scores(test_metrics, primary)}")
    whole_first_loss = run_summary.first_logged_loss(log.path) if info.is_main else None
    summary = run_summary.build(
        cfg=cfg, out=run.out, task=run.task.name, primary=primary, best=best, total_steps=run.total_steps,
        start_step=start_step, resumed=resumed, first_loss=first_loss, whole_first_loss=whole_first_loss,
        last_loss=last_loss, elapsed=elapsed, earlier_time=run.earlier_train_time, world_size=info.world_size,
        test_metrics=test_metrics,
    )
    summary["exports"] = export_prompt(run.model, run.out, info, base_model=run_summary.base_model_name(cfg),
                                       card=lambda folder: run_summary.model_card(summary, cfg, folder))
    if info.is_main:
        run_summary.write(summary)
    if log.tensorboard is not None:
        log.tensorboard.close()
    return summary


def train(cfg: TrainConfig, task=None, resumption: resume.Resumption | None = None) -> dict:
    """Runs the whole training described by ``cfg``; returns the summary (on every rank), or
    raises :class:`~rpt_fast.train.stopping.Stopped` after a signal stopped it with a checkpoint.
    ``task``: the run's task if already loaded (by :func:`~rpt_fast.train.preflight.preflight`);
    ``resumption``: from :func:`~rpt_fast.train.resume.prepare` (the command line's); without it
    a resuming ``cfg`` must match the saved run in every setting that defines it."""
    cfg.validate()
    if cfg.resume and resumption is None:
        cfg, resumption = resume.prepare(cfg, explicit=field_names())
    info = init_distributed(cfg.deepspeed)
    with propagate_failures(info):  # one rank's exception stops every rank within seconds
        resume_from = None
        if cfg.resume:  # checked before the (possibly long) model build
            resume_from = state.find_resumable(os.path.join(os.path.abspath(cfg.output_dir), CHECKPOINTS), info)
            if resume_from is None:
                raise on_every_rank(CheckpointError(f"no checkpoint in {cfg.output_dir} any more"))
        made_here = not (cfg.output_dir and os.path.isdir(cfg.output_dir))
        out = _output_dir(cfg, info)
        try:
            run = Run(cfg, info, task, out=out)
            if not cfg.skip_self_check:  # the prompt encoder's op against float64, before step 1
                self_check(run)
        except BaseException:
            if made_here and info.is_main and not os.listdir(out):  # a failed start leaves nothing
                os.rmdir(out)
            raise
        if info.is_main and resume_from is None:  # the run's first settings, never overwritten
            with open(os.path.join(run.out, resume.CONFIG_FILE), "w", encoding="utf-8") as handle:
                json.dump({"train": run.cfg.recorded(), "deepspeed": run.ds_config}, handle, indent=1)
        with stopping.stop_requests(info) as stop:
            result = _run_loop(run, resume_from, resumption and resumption.changes, stop)
    shutdown(info, cfg.deepspeed)
    if isinstance(result, stopping.Stopped):
        raise result
    return result
