"""Checks a run's inputs before anything slow happens (no process group, no DeepSpeed, no model
built): the model folder (config.json, a model type transformers can build, weights), the
tokenizer path, the output folder (a new run never overwrites another), the DeepSpeed JSON, the
task and its data files, the batch against the training set and the ranks. Each failure is a
:class:`~rpt_fast.train.errors.UsageError` naming the flag; the loaded task is returned so the
data files are read once."""

from __future__ import annotations

import dataclasses
import json
import os

from ..presets import PRESETS
from . import checkpoint
from .config import TrainConfig, as_usage_error
from .errors import UsageError
from .summary import SUMMARY_FILE

# What from_pretrained loads (transformers.utils' SAFE_WEIGHTS_NAME, WEIGHTS_NAME and their
# sharded indexes).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _model_type(cfg: TrainConfig) -> str:
    """The model type of ``--model``'s config.json, one transformers builds as a language model."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    path = os.path.join(cfg.model, "config.json")
    if not os.path.isfile(path):
        raise UsageError("model", f"{cfg.model!r} has no config.json: expected a Hugging Face checkpoint directory "
                                  f"(config.json and weights) or a preset ({', '.join(PRESETS)})")
    try:
        with open(path, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise UsageError("model", f"{path} is not a JSON object ({exc})") from exc
    if not model_type:
        raise UsageError("model", f"{path} names no model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise UsageError("model", f"{path}: model_type {model_type!r} is not one that transformers "
                                  f"{transformers.__version__} knows")
    if model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UsageError("model", f"{path}: model_type {model_type!r} is neither a sequence-to-sequence nor a causal "
                                  "language model (AutoModelForSeq2SeqLM, AutoModelForCausalLM)")
    return model_type


def _check_model(cfg: TrainConfig) -> None:
    if cfg.model in PRESETS:
        return
    if not os.path.isdir(cfg.model):
        raise UsageError(
            "model", f"expected a preset ({', '.join(PRESETS)}) or a local Hugging Face checkpoint "
            f"directory, got {cfg.model!r} (no such directory)"
        )
    model_type = _model_type(cfg)
    if not any(os.path.isfile(os.path.join(cfg.model, name)) for name in WEIGHT_FILES):
        raise UsageError("model", f"{cfg.model!r} has a config.json ({model_type}) but no weights: expected "
                                  f"{' or '.join(WEIGHT_FILES[::2])} (or a sharded checkpoint's *.index.json)")
    from .backbone import model_config

    try:
        model_config(cfg)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()
        raise UsageError("model", f"cannot read the model config in {cfg.model!r} ({first[0] if first else exc!r})") from exc


def _check_paths(cfg: TrainConfig) -> None:
    if cfg.tokenizer is not None and not os.path.isdir(cfg.tokenizer):
        raise UsageError("tokenizer", f"expected a local tokenizer directory, got {cfg.tokenizer!r} (no such directory)")
    if cfg.offload_param == "nvme" and not os.path.isdir(cfg.nvme_path):
        raise UsageError("nvme_path", f"expected an existing directory, got {cfg.nvme_path!r}")
    if cfg.output_dir is not None and os.path.exists(cfg.output_dir) and not os.path.isdir(cfg.output_dir):
        raise UsageError("output_dir", f"expected a directory, got {cfg.output_dir!r} (a file)")
    if cfg.output_dir is not None and not cfg.resume:
        held = _earlier_run(cfg.output_dir)
        if held:
            raise UsageError("output_dir", f"{cfg.output_dir} holds a run already ({held}): --resume continues it, "
                                           "a new run needs another folder")


def _earlier_run(out: str) -> str | None:
    """What in ``out`` shows a run that a new one would overwrite: a checkpoint, or a finished
    run's summary."""
    try:
        step = checkpoint.latest_step(os.path.join(out, checkpoint.FOLDER))
    except checkpoint.CheckpointError:
        return "a damaged checkpoint pointer"
    if step is not None:
        return f"a checkpoint at step {step}"
    return SUMMARY_FILE if os.path.isfile(os.path.join(out, SUMMARY_FILE)) else None


def check_scale(cfg: TrainConfig, world_size: int) -> None:
    """The run's ranks against its settings: the batch split, the user JSON, --no-deepspeed on
    one process (also what rpt-memory checks before planning a run)."""
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
    _check_model(cfg)  # before the scale checks, which read its config
    if cfg.report_to == "tensorboard":
        from .tensorboard import check_available

        check_available()
    check_scale(cfg, world_size)
    task = load_task(cfg)
    if len(task.train) < cfg.batch_size:
        raise UsageError(
            "batch_size", f"expected at most the {len(task.train)} training examples "
            f"(after --max-train-examples), got {cfg.batch_size}"
        )
    if cfg.chat_template:
        from .backbone import check_chat_template

        check_chat_template(cfg)
    return task
