"""What a finished run says about itself: ``summary.json``, the lines printed at the end and the
model card of the exported adapter. After a resume each counts both what this process did and
what the whole run did; a best prompt that is still the untrained step-0 one is said out loud."""

from __future__ import annotations

import json
import os
import shlex
import sys

from ..presets import PRESETS
from .backbone import model_config
from .config import TrainConfig

SUMMARY_FILE = "summary.json"


def base_model_name(cfg: TrainConfig) -> str:
    """What an adapter names as its base: the preset's name, or the checkpoint's absolute path."""
    return cfg.model if cfg.model in PRESETS else os.path.abspath(cfg.model)


def command_line() -> str:
    """This process's ``rpt-train`` command (the launcher's ``--local_rank`` left out)."""
    args = [a for a in sys.argv[1:] if not a.startswith(("--local_rank", "--local-rank"))]
    return shlex.join(["rpt-train", *args])


def first_logged_loss(metrics_file: str) -> float | None:
    """The first training-loss record of the whole run (the log survives resumes)."""
    if not os.path.isfile(metrics_file):
        return None
    with open(metrics_file, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line) if line.strip() else {}
            if record.get("type") == "train":
                return record["loss"]
    return None


def warnings_for(best: dict) -> list[str]:
    if best["score"] is not None and best["step"] == 0:
        return [f"no evaluation scored above the first one (step 0, {best['score']:.3f}): the exported prompt "
                "is the untrained step-0 prompt; train longer (--max-steps) or check --lr"]
    return []


def build(*, cfg: TrainConfig, out: str, task: str, primary: str, best: dict, total_steps: int,
          start_step: int, resumed: bool, first_loss: float | None, whole_first_loss: float | None,
          last_loss: float, elapsed: float, earlier_time: float, world_size: int,
          test_metrics: dict | None = None) -> dict:
    """The summary record; ``elapsed`` is this process's training time, ``earlier_time`` the
    training time of the processes before a resume (0 for a fresh run)."""
    return {
        "output_dir": out,
        "task": task,
        "primary_metric": primary,
        "best_score": best["score"],
        "best_step": best["step"],
        "best_metrics": best["metrics"],
        "test_metrics": test_metrics,  # the official val/test split's test half (--eval-split halves)
        "exported_step": best["step"],
        "steps": total_steps,
        "resumed_from_step": start_step if resumed else None,
        "first_logged_loss": whole_first_loss if whole_first_loss is not None else first_loss,
        "final_loss": last_loss,
        "train_time_s": round(earlier_time + elapsed, 2),
        "this_run": {"steps": total_steps - start_step, "first_logged_loss": first_loss,
                     "train_time_s": round(elapsed, 2)},
        "world_size": world_size,
        "mode": f"deepspeed zero-{cfg.zero_stage}" if cfg.deepspeed else "pytorch",
        "command": command_line(),
        "warnings": warnings_for(best),
    }


def _loss(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def lines(summary: dict) -> list[str]:
    """The end-of-run report, one fact a line."""
    score = summary["best_score"]
    best = "no evaluation (the final prompt is exported)" if score is None else \
        f"{summary['primary_metric']} {score:.3f} at step {summary['best_step']} (the prompt exported)"
    where = f"({summary['mode']}, {summary['world_size']} rank(s))"
    this = summary["this_run"]
    if summary["resumed_from_step"] is None:
        done = f"done: {summary['steps']} steps in {summary['train_time_s']:.1f}s {where}"
    else:
        done = (f"done: steps {summary['resumed_from_step'] + 1}-{summary['steps']} ({this['steps']} steps) in "
                f"{this['train_time_s']:.1f}s after resuming from step {summary['resumed_from_step']}; whole run "
                f"{summary['steps']} steps in {summary['train_time_s']:.1f}s of training {where}")
    out = [
        done,
        f"loss: {_loss(summary['first_logged_loss'])} (first log of the run) -> {_loss(summary['final_loss'])} (last)",
        f"best: {best}",
        *[f"warning: {w}" for w in summary["warnings"]],
        f"prompt: {summary['exports']['prompt']}",
        f"PEFT adapter: {summary['exports']['peft']}",
        f"summary: {os.path.join(summary['output_dir'], SUMMARY_FILE)}",
    ]
    return out


def write(summary: dict) -> None:
    with open(os.path.join(summary["output_dir"], SUMMARY_FILE), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    print("\n".join(lines(summary)), flush=True)


def model_card(summary: dict, cfg: TrainConfig, adapter_dir: str) -> str:
    """The adapter folder's README.md: what it is, how it scored, how it was made and reloaded."""
    base = base_model_name(cfg)
    score = summary["best_score"]
    result = "not evaluated" if score is None else \
        f"{summary['primary_metric']} {score:.3f} on the evaluation set at step {summary['best_step']}"
    causal = not getattr(model_config(cfg), "is_encoder_decoder", False)
    if cfg.model in PRESETS:
        load = (f"from rpt_fast.presets import build_backbone\n"
                f"backbone = build_backbone({cfg.model!r}, seed={cfg.seed})  # the run's random-weight preset\n")
    else:
        auto = "AutoModelForCausalLM" if causal else "AutoModelForSeq2SeqLM"
        load = f"from transformers import {auto}\nbackbone = {auto}.from_pretrained({base!r})\n"
    layout = ("the tokenizer's chat template around the input (a user turn and the assistant header)"
              if cfg.chat_template else "the input followed by a newline (after BOS where the tokenizer adds one)")
    inputs = f"- inputs: {layout}; the model continues with the answer and EOS\n" if causal else ""
    warning = "".join(f"\n**Warning:** {w}\n" for w in summary["warnings"])
    return f"""---
library_name: peft
base_model: {base}
tags: [prompt-tuning, residual-prompt-tuning, rpt-fast]
---

# Residual prompt for `{summary['task']}` on `{base}`

A PEFT prompt-tuning adapter ({cfg.num_tokens} virtual tokens) trained by
[rpt-fast](https://arxiv.org/abs/2305.03937)'s Residual Prompt Tuning: the reparameterization
MLP is folded into the prompt, so stock PEFT loads it.

- task: `{summary['task']}`
- result: {result}
- steps: {summary['steps']} (batch {cfg.batch_size}, learning rate {cfg.lr})
- command: `{summary['command']}` ({summary['mode']}, {summary['world_size']} rank(s))
{inputs}{warning}
```python
from peft import PeftModel
{load}model = PeftModel.from_pretrained(backbone, {adapter_dir!r})
```
"""
