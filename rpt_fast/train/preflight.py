"""Checks a run's inputs before anything slow happens (no process group, no DeepSpeed, no model
built): the model and tokenizer paths, the DeepSpeed JSON, the task and its data files, the
batch against the training set and the ranks. Each failure is a
:class:`~rpt_fast.train.errors.UsageError` naming the flag; the loaded task is returned so the
data files are read once."""

from __future__ import annotations

import dataclasses
import os

from ..presets import PRESETS
from .config import TrainConfig
from .errors import UsageError, as_usage_error


def _check_model(cfg: TrainConfig) -> None:
    if cfg.model in PRESETS:
        return
    if not os.path.isdir(cfg.model):
        raise UsageError(
            "model", f"expected a preset ({', '.join(PRESETS)}) or a local Hugging Face checkpoint "
            f"directory, got {cfg.model!r} (no such directory)"
        )
    if not os.path.isfile(os.path.join(cfg.model, "config.json")):
        raise UsageError("model", f"expected a Hugging Face checkpoint directory with config.json, got {cfg.model!r}")
    from .backbone import model_config

    try:
        model_config(cfg)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError("model", f"cannot read the model config in {cfg.model!r} ({exc})") from exc


def _check_paths(cfg: TrainConfig) -> None:
    if cfg.tokenizer is not None and not os.path.isdir(cfg.tokenizer):
        raise UsageError("tokenizer", f"expected a local tokenizer directory, got {cfg.tokenizer!r} (no such directory)")
    if cfg.offload_param == "nvme" and not os.path.isdir(cfg.nvme_path):
        raise UsageError("nvme_path", f"expected an existing directory, got {cfg.nvme_path!r}")
    if cfg.output_dir is not None and os.path.exists(cfg.output_dir) and not os.path.isdir(cfg.output_dir):
        raise UsageError("output_dir", f"expected a directory, got {cfg.output_dir!r} (a file)")


def _check_scale(cfg: TrainConfig, world_size: int) -> None:
    if not cfg.deepspeed:
        if world_size != 1:
            raise UsageError(
                "no_deepspeed", f"plain PyTorch trains in one process, but the launcher started {world_size} "
                "(use DeepSpeed, any --zero-stage, for several ranks)"
            )
        return
    from .ds_config import build_ds_config

    # The batch split and the user JSON; they do not depend on the stage "auto" resolves to later.
    concrete = dataclasses.replace(cfg, zero_stage=3 if cfg.zero_stage == "auto" else cfg.zero_stage,
                                   offload_param="none" if cfg.offload_param == "auto" else cfg.offload_param)
    build_ds_config(concrete, world_size, pin_memory=False)


def load_task(cfg: TrainConfig):
    """The run's task with its data files read and formatted; a bad file names ``--data-dir``."""
    from .tasks import get_task

    try:
        return get_task(cfg.task, cfg.data_dir, seed=cfg.seed, max_train=cfg.max_train_examples,
                        max_eval=cfg.max_eval_examples, few_shot=cfg.few_shot, eval_split=cfg.eval_split,
                        wsc_format=cfg.wsc_format)
    except ValueError as exc:
        raise as_usage_error(exc) or UsageError("data_dir", str(exc)) from exc


def preflight(cfg: TrainConfig, world_size: int | None = None):
    """Every check that needs no model and no process group; returns the loaded task."""
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    cfg.validate()
    _check_paths(cfg)
    if cfg.report_to == "tensorboard":
        from .tensorboard import check_available

        check_available()
    _check_scale(cfg, world_size)
    task = load_task(cfg)
    if len(task.train) < cfg.batch_size:
        raise UsageError(
            "batch_size", f"expected at most the {len(task.train)} training examples "
            f"(after --max-train-examples), got {cfg.batch_size}"
        )
    _check_model(cfg)
    if cfg.chat_template:
        from .backbone import check_chat_template

        check_chat_template(cfg)
    return task
