"""The training run's settings in one dataclass, checked once, so every module reads the same
validated values (the command line in :mod:`cli` only fills it)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

OFFLOAD_DEVICES = ("none", "cpu", "nvme")
ZERO_STAGES = (0, 1, 2, 3)
EVAL_MODES = ("generate", "likelihood")
PROMPT_INITS = ("vocab", "random")
DEFAULT_STEPS = 300  # without --epochs/--max-steps: the demo's few hundred steps


@dataclass
class TrainConfig:
    # Model and data.
    model: str = "t5-tiny"
    tokenizer: str | None = None
    task: str = "synthetic"
    data_dir: str | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    max_input_length: int = 256
    max_target_length: int = 16
    backbone_dropout: float | None = None
    # The paper's knobs.
    num_tokens: int = 100
    bottleneck: int = 800
    separate: bool = False
    prompt_dropout: float = 0.0
    prompt_init: str = "vocab"
    backend: str = "auto"
    lr: float = 0.3
    weight_decay: float = 1e-5
    warmup_steps: int = 0
    batch_size: int = 8
    eval_batch_size: int | None = None
    epochs: int | None = None
    max_steps: int | None = None
    eval_interval: int = 100
    log_interval: int = 10
    seed: int = 42
    max_grad_norm: float = 1.0
    # Scale.
    deepspeed: bool = True
    # "auto": chosen from the memory planner and the device's memory (see autoplan.py).
    zero_stage: int | str = "auto"
    offload_param: str = "auto"
    nvme_path: str | None = None
    bf16: bool = False
    gradient_checkpointing: bool = False
    # ZeRO-3 keeps at most this many gathered parameters live (prefetch and reuse take half);
    # None: twice the largest parameter, at least 1e8, prefetching a block (autoplan.py).
    max_live_parameters: int | None = None
    gpu_memory: str | None = None  # device memory for the auto choice, e.g. "80GB"
    deepspeed_config: str | None = None
    # Evaluation: "generate" (greedy decoding) or "likelihood" (the label string with the
    # highest likelihood; classification tasks with a fixed label set).
    eval_mode: str = "generate"
    # Output, checkpoints.
    output_dir: str | None = None
    save_interval: int = 0
    resume: bool = False
    progress: bool = True

    def validate(self) -> "TrainConfig":
        """Raises ValueError naming the first bad setting; returns self."""
        positive = ("num_tokens", "bottleneck", "batch_size", "max_input_length",
                    "max_target_length", "log_interval")
        for name in positive:
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "eval_interval", "save_interval"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("max_steps", "epochs", "eval_batch_size", "max_train_examples", "max_eval_examples"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay}")
        if self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm: expected >= 0 (0 turns clipping off), got {self.max_grad_norm}")
        for name in ("prompt_dropout", "backbone_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1), got {value}")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init: expected one of {PROMPT_INITS}, got {self.prompt_init!r}")
        self._validate_scale()
        if self.deepspeed_config is not None and not os.path.isfile(self.deepspeed_config):
            raise ValueError(f"deepspeed_config: no such file: {self.deepspeed_config!r}")
        if self.resume and not self.output_dir:
            raise ValueError("resume: needs output_dir, the run folder whose checkpoints to continue")
        return self

    def _validate_scale(self) -> None:
        if self.zero_stage != "auto" and self.zero_stage not in ZERO_STAGES:
            raise ValueError(f"zero_stage: expected 'auto' or one of {ZERO_STAGES}, got {self.zero_stage!r}")
        if self.offload_param != "auto" and self.offload_param not in OFFLOAD_DEVICES:
            raise ValueError(f"offload_param: expected 'auto' or one of {OFFLOAD_DEVICES}, got {self.offload_param!r}")
        if self.offload_param not in ("none", "auto") and (not self.deepspeed or self.zero_stage not in (3, "auto")):
            raise ValueError(
                f"offload_param={self.offload_param!r} needs DeepSpeed ZeRO stage 3, got "
                f"{'no DeepSpeed' if not self.deepspeed else f'zero_stage={self.zero_stage}'}"
            )
        if self.offload_param == "nvme" and not self.nvme_path:
            raise ValueError("offload_param='nvme' needs nvme_path (a directory on a fast local disk)")
        if self.max_live_parameters is not None:
            _check_int("max_live_parameters", self.max_live_parameters, minimum=1)
        if self.gpu_memory is not None:
            from ..memory import parse_bytes

            if parse_bytes(self.gpu_memory) <= 0:
                raise ValueError(f"gpu_memory: expected a positive size like '80GB', got {self.gpu_memory!r}")
        if self.eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode: expected one of {EVAL_MODES}, got {self.eval_mode!r}")

    def total_steps(self, steps_per_epoch: int) -> int:
        """``max_steps`` and ``epochs`` both bound the run; with neither, the demo's length."""
        bounds = [b for b in (self.max_steps, self.epochs and self.epochs * steps_per_epoch) if b]
        return min(bounds) if bounds else DEFAULT_STEPS

    @property
    def total_eval_batch_size(self) -> int:
        return self.eval_batch_size or 4 * self.batch_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
