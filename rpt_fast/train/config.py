"""The training run's settings in one dataclass, checked once, so every module reads the same
validated values (the command line in :mod:`flags` only fills it), and what ``--resume`` may
change of each (:data:`RESUME_ROLES`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..ops import BACKENDS
from .errors import UsageError

OFFLOAD_DEVICES = ("none", "cpu", "nvme")
ZERO_STAGES = (0, 1, 2, 3)
EVAL_MODES = ("generate", "likelihood")
PROMPT_INITS = ("vocab", "random")
REPARAMS = ("residual", "none")
LR_SCHEDULERS = ("constant", "linear")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")  # rpt_fast.modules.ACTIVATIONS
EVAL_SPLITS = ("full", "halves")  # rpt_fast.train.tasks.EVAL_SPLITS
WSC_FORMATS = ("span", "official")  # rpt_fast.train.tasks.WSC_FORMATS
REPORT_TO = ("none", "tensorboard")
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
    chat_template: bool = False  # decoder-only: inputs as a user turn of the tokenizer's chat template
    # The paper's knobs.
    num_tokens: int = 100
    bottleneck: int = 800
    separate: bool = False
    prompt_dropout: float = 0.0
    prompt_init: str = "vocab"
    backend: str = "auto"
    skip_self_check: bool = False  # no check of the prompt MLP's op against float64 before step 1
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
    max_grad_norm: float = 0.0  # the official recipe does not clip
    # The official recipe (issue 13).
    reparam: str = "residual"  # "none": plain prompt tuning (the official --prefix_MLP None)
    layer_norm: bool = True  # MLP ablations (the official ResMLP's options)
    residual: bool = True
    activation: str = "relu"
    mlp_lr: float | None = None  # None: lr (the official optimizer's MLP group)
    mlp_weight_decay: float | None = None  # None: weight_decay
    lr_scheduler: str = "constant"  # after warmup_steps; the official trains at a constant lr
    gradient_accumulation_steps: int = 1
    max_new_tokens: int | None = None  # None: the task's official generation length
    few_shot: int | None = None  # k training examples per label
    eval_split: str = "full"  # "halves": the official val/test split of the eval file
    wsc_format: str = "span"
    # Scale.
    deepspeed: bool = True
    # "auto": chosen from the memory planner and the device's memory (see autoplan.py).
    zero_stage: int | str = "auto"
    offload_param: str = "auto"
    nvme_path: str | None = None
    bf16: bool = False
    gradient_checkpointing: bool = False
    # ZeRO-3 keeps at most this many gathered parameters live (prefetch and reuse take half);
    # None: planned at start from the device memory the rest of the run leaves, for the run's
    # world size (autoplan.planned_live_parameters).
    max_live_parameters: int | None = None
    gpu_memory: str | None = None  # device memory for the auto choice, e.g. "80GB"
    deepspeed_config: str | None = None
    # Evaluation: "generate" (greedy decoding) or "likelihood" (the label string with the
    # highest likelihood; classification tasks with a fixed label set).
    eval_mode: str = "generate"
    # Output, checkpoints.
    output_dir: str | None = None
    save_interval: int = 0
    save_total_limit: int = 1  # checkpoints kept (the newest ones)
    resume: bool | str = False  # True: continue output_dir's run; "auto": continue it if it has a checkpoint
    progress: bool = True
    report_to: str = "none"

    def validate(self) -> "TrainConfig":
        """Raises ValueError (a :class:`~rpt_fast.train.errors.UsageError` or one whose message
        starts with the field's name) naming the first bad setting; returns self."""
        positive = ("num_tokens", "bottleneck", "batch_size", "max_input_length",
                    "max_target_length", "log_interval", "save_total_limit")
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
        if self.backend not in BACKENDS:
            raise UsageError("backend", f"expected one of {BACKENDS}, got {self.backend!r}")
        if self.report_to not in REPORT_TO:
            raise UsageError("report_to", f"expected one of {REPORT_TO}, got {self.report_to!r}")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init: expected one of {PROMPT_INITS}, got {self.prompt_init!r}")
        self._validate_scale()
        if self.deepspeed_config is not None and not os.path.isfile(self.deepspeed_config):
            raise UsageError("deepspeed_config", f"expected a JSON file, got {self.deepspeed_config!r} (no such file)")
        if self.resume not in (False, True, "auto"):
            raise UsageError("resume", f"expected nothing (resume) or auto, got {self.resume!r}")
        if self.resume and not self.output_dir:
            raise UsageError("resume", "needs --output-dir, the run folder whose checkpoints to continue")
        for name, choices in (("reparam", REPARAMS), ("lr_scheduler", LR_SCHEDULERS), ("activation", ACTIVATIONS),
                              ("eval_split", EVAL_SPLITS), ("wsc_format", WSC_FORMATS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}: expected one of {choices}, got {getattr(self, name)!r}")
        _check_int("gradient_accumulation_steps", self.gradient_accumulation_steps, minimum=1)
        for name in ("max_new_tokens", "few_shot"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        if self.mlp_lr is not None and not self.mlp_lr > 0:
            raise ValueError(f"mlp_lr: expected a positive learning rate (or None: lr), got {self.mlp_lr}")
        if self.mlp_weight_decay is not None and self.mlp_weight_decay < 0:
            raise ValueError(f"mlp_weight_decay: expected >= 0 (or None: weight_decay), got {self.mlp_weight_decay}")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"batch_size: the global batch {self.batch_size} must split into "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps} equal micro-batches"
            )
        if self.reparam == "none":
            mlp_only = {"separate": False, "prompt_dropout": 0.0, "layer_norm": True, "residual": True,
                        "activation": "relu", "mlp_lr": None, "mlp_weight_decay": None}
            for name, default in mlp_only.items():
                if getattr(self, name) != default:
                    raise ValueError(f"{name}: sets the MLP, which reparam='none' does not have (got {getattr(self, name)!r})")
        return self

    def _validate_scale(self) -> None:
        if self.zero_stage != "auto" and self.zero_stage not in ZERO_STAGES:
            raise ValueError(f"zero_stage: expected 'auto' or one of {ZERO_STAGES}, got {self.zero_stage!r}")
        if self.offload_param != "auto" and self.offload_param not in OFFLOAD_DEVICES:
            raise ValueError(f"offload_param: expected 'auto' or one of {OFFLOAD_DEVICES}, got {self.offload_param!r}")
        if self.offload_param not in ("none", "auto") and (not self.deepspeed or self.zero_stage not in (3, "auto")):
            raise UsageError(
                "offload_param",
                f"{self.offload_param} needs DeepSpeed ZeRO stage 3 (--zero-stage 3), got "
                f"{'--no-deepspeed' if not self.deepspeed else f'--zero-stage {self.zero_stage}'}",
            )
        if self.offload_param == "nvme" and not self.nvme_path:
            raise UsageError("nvme_path", "--offload-param nvme needs a directory on a fast local disk, got none")
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

    def length_flags(self, steps_per_epoch: int) -> list[str]:
        """The flags whose bound is :meth:`total_steps` (both where they tie): the ones a longer
        run must raise (a larger ``--max-steps`` does nothing where ``--epochs`` ends the run)."""
        total = self.total_steps(steps_per_epoch)
        flags = [flag for flag, bound in (("--max-steps", self.max_steps),
                                          ("--epochs", self.epochs and self.epochs * steps_per_epoch))
                 if bound == total]
        return flags or ["--max-steps"]  # neither given: the default length, which --max-steps replaces

    @property
    def total_eval_batch_size(self) -> int:
        return self.eval_batch_size or 4 * self.batch_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def recorded(self) -> dict:
        """The settings as a run's ``config.json`` records them: paths made absolute, so the
        record resumes and reproduces the run from any working directory."""
        out = self.to_dict()
        for name in PATH_SETTINGS:
            value = out[name]
            if value is not None and (name != "model" or os.path.isdir(value)):  # a preset stays a name
                out[name] = os.path.abspath(value)
        return out


PATH_SETTINGS = ("model", "tokenizer", "data_dir", "nvme_path", "deepspeed_config", "output_dir")

# What --resume does with each setting (a test checks that every field is here):
# FIXED: defines what is trained (model, data, prompt, optimizer, batch, seed, precision, the
#   evaluation that picks the exported prompt); a resumed run keeps the saved value and refuses
#   another one.
# FREE: extends, observes or places the run without changing its numbers (its length, evaluation
#   and checkpoint intervals, logging, memory knobs); may change on resume, and the change is
#   recorded in the run folder's resumes.jsonl next to the untouched config.json.
# INVOCATION: this command's own (where the run is, whether to resume, its progress bar); never
#   taken from the run.
FIXED, FREE, INVOCATION = "fixed", "free", "invocation"
RESUME_ROLES = {
    "model": FIXED, "tokenizer": FIXED, "task": FIXED, "data_dir": FIXED, "max_train_examples": FIXED,
    "max_eval_examples": FIXED, "max_input_length": FIXED, "max_target_length": FIXED, "backbone_dropout": FIXED,
    "chat_template": FIXED,
    "num_tokens": FIXED, "bottleneck": FIXED, "separate": FIXED, "prompt_dropout": FIXED, "prompt_init": FIXED,
    "backend": FIXED, "lr": FIXED, "weight_decay": FIXED, "warmup_steps": FIXED, "batch_size": FIXED,
    "eval_batch_size": FREE, "epochs": FREE, "max_steps": FREE, "eval_interval": FREE, "log_interval": FREE,
    "seed": FIXED, "max_grad_norm": FIXED,
    "reparam": FIXED, "layer_norm": FIXED, "residual": FIXED, "activation": FIXED, "mlp_lr": FIXED,
    "mlp_weight_decay": FIXED, "lr_scheduler": FIXED, "gradient_accumulation_steps": FIXED, "max_new_tokens": FIXED,
    "few_shot": FIXED, "eval_split": FIXED, "wsc_format": FIXED,
    "deepspeed": FIXED, "zero_stage": FIXED, "offload_param": FIXED, "nvme_path": FREE, "bf16": FIXED,
    "gradient_checkpointing": FREE, "max_live_parameters": FREE, "gpu_memory": FREE, "deepspeed_config": FIXED,
    "eval_mode": FIXED,
    "output_dir": INVOCATION, "save_interval": FREE, "save_total_limit": FREE, "resume": INVOCATION,
    "progress": INVOCATION, "skip_self_check": INVOCATION, "report_to": FREE,
}


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(TrainConfig))


def as_usage_error(exc: BaseException) -> UsageError | None:
    """``exc`` as a :class:`~rpt_fast.train.errors.UsageError` when it is one, or a
    ``ValueError`` whose message starts with a settings field (``"batch_size: ..."``); None for
    anything else (a bug: keep its traceback)."""
    if isinstance(exc, UsageError):
        return exc
    if type(exc) is not ValueError:
        return None
    head, sep, rest = str(exc).partition(":")
    head = head.strip()
    if sep and (head in field_names() or head.startswith("--")):
        return UsageError(head, rest.strip())
    return None


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
