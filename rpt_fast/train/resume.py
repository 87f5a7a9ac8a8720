"""``--resume``: a resumed run trains with the settings its folder recorded, not with whatever
flags the resuming command happens to repeat.

The run's first settings are its ``config.json`` (written once, when the run starts, never
overwritten); each resume appends one line to ``resumes.jsonl`` with what it changed and the
settings it then trained with, so the folder tells the run's whole history and the next resume
starts from the latest settings. Of the flags the command gives (on the command line or in a
``--config`` file), those that define what is trained must equal the saved values (else one
line names the flag); those that extend or observe the run (:data:`config.RESUME_ROLES`) may
change. ``--resume`` on a folder without a checkpoint is refused (a mistyped path must not train
from scratch); ``--resume auto`` starts the run there instead, for job scripts that always pass
it. All of this is decided from the files alone, before any process group exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass

from . import checkpoint
from .config import FIXED, FREE, INVOCATION, PATH_SETTINGS, RESUME_ROLES, TrainConfig, field_names
from .errors import UsageError, flag_name
from .summary import SUMMARY_FILE

CONFIG_FILE = "config.json"  # {"train": the first settings, "deepspeed": the generated DeepSpeed config}
RESUMES_FILE = "resumes.jsonl"  # one line per resume: its step, command, changes and settings


@dataclass(frozen=True)
class Resumption:
    """A resume about to happen: the step of the folder's latest checkpoint and the settings
    this command changes (``{name: [before, now]}``)."""

    step: int
    changes: dict


def saved_settings(out: str) -> dict:
    """The settings the run in ``out`` trains with: its ``config.json``'s, as the latest resume
    recorded in ``resumes.jsonl`` left them."""
    path, resumes = os.path.join(out, CONFIG_FILE), os.path.join(out, RESUMES_FILE)
    if not os.path.isfile(path):
        raise UsageError("resume", f"{out} has a checkpoint but no {CONFIG_FILE} (the run's settings)")
    try:
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)["train"]
        if os.path.isfile(resumes):
            with open(resumes, encoding="utf-8") as handle:
                lines = [line for line in handle if line.strip()]
            if lines:
                settings, path = json.loads(lines[-1])["settings"], resumes
        unknown = sorted(set(settings) - set(field_names()))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError("resume", f"cannot read the run's settings in {out} ({type(exc).__name__}: {exc})") from exc
    if unknown:
        raise UsageError("resume", f"{path} holds settings this version of rpt-fast does not know: {', '.join(unknown)}")
    return settings


PLANNED = ("zero_stage", "offload_param")  # "auto" given, the planner's choice saved: the same setting


def _same(name: str, a, b) -> bool:
    if a == b or (name in PLANNED and a == "auto"):
        return True
    paths = name in PATH_SETTINGS and isinstance(a, str) and isinstance(b, str)
    return paths and os.path.abspath(a) == os.path.abspath(b)


def prepare(cfg: TrainConfig, explicit) -> tuple[TrainConfig, Resumption | None]:
    """The settings to run with and the resume about to happen (None: a new run). ``explicit``:
    the settings the command gave (the rest are defaults, which never override the saved run)."""
    if not cfg.resume:
        return cfg, None
    out = cfg.output_dir
    try:
        step = checkpoint.latest_step(os.path.join(out, checkpoint.FOLDER))
    except checkpoint.CheckpointError as exc:
        raise UsageError("resume", str(exc)) from exc
    if step is None:
        if cfg.resume == "auto":
            return dataclasses.replace(cfg, resume=False), None
        where = "it has no checkpoint" if os.path.isdir(out) else "no such folder"
        raise UsageError("resume", f"nothing to resume in --output-dir {out} ({where}); --resume auto starts the "
                                   "run where there is no checkpoint yet")
    saved = {**TrainConfig().to_dict(), **saved_settings(out)}
    for name in field_names():
        if name in explicit and RESUME_ROLES[name] == FIXED and not _same(name, getattr(cfg, name), saved[name]):
            raise UsageError(name, f"the run in {out} trains with {flag_name(name)} {saved[name]!r}, and a resumed "
                                   "run keeps what defines it (a new run in another --output-dir can change it)")
    settings = {**saved, **{name: getattr(cfg, name) for name in field_names() if RESUME_ROLES[name] == INVOCATION},
                "resume": True}
    changes = {}
    for name in field_names():
        if name in explicit and RESUME_ROLES[name] == FREE and not _same(name, getattr(cfg, name), saved[name]):
            settings[name] = getattr(cfg, name)
            changes[name] = [saved[name], settings[name]]
    if "gpu_memory" in changes and "max_live_parameters" not in explicit and saved["max_live_parameters"] is not None:
        settings["max_live_parameters"] = None  # planned again from the new memory, as a new run plans it
        changes["max_live_parameters"] = [saved["max_live_parameters"], None]
    if saved["lr_scheduler"] == "linear":
        for name in ("max_steps", "epochs"):
            if name in changes:
                raise UsageError(name, "the linear learning-rate schedule decays to 0 at the run's last step, so a "
                                       "resumed run with --lr-scheduler linear keeps its length")
    return TrainConfig(**settings), Resumption(step, changes)


def finished(cfg: TrainConfig, resumption: Resumption, num_examples: int) -> bool:
    """Whether the run to resume has already trained all ``cfg``'s steps and written its summary
    (``num_examples``: the training set's size). A run already past them is refused."""
    from .data import StepSampler

    sampler = StepSampler(num_examples, cfg.batch_size, cfg.seed, 0, 1, accumulation=cfg.gradient_accumulation_steps)
    total = cfg.total_steps(sampler.steps_per_epoch)
    if resumption.step > total:
        raise UsageError("epochs" if cfg.epochs and not cfg.max_steps else "max_steps",
                         f"the run in {cfg.output_dir} is at step {resumption.step} already, past the {total} steps "
                         "asked for")
    try:
        with open(os.path.join(cfg.output_dir, SUMMARY_FILE), encoding="utf-8") as handle:
            summary = json.load(handle)
    except (OSError, ValueError):
        return False
    return resumption.step == total == summary.get("steps")


def record(out: str, step: int, changes: dict, cfg: TrainConfig, command: str) -> None:
    """Appends this resume to the run's ``resumes.jsonl`` (rank 0, once the checkpoint loaded)."""
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_step": step, "command": command,
             "changes": changes, "settings": cfg.recorded()}
    with open(os.path.join(out, RESUMES_FILE), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
