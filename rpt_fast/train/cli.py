"""``rpt-train``: the command line. With no arguments it runs the demo: a tiny random-weight T5
with the byte-level tokenizer learns the built-in synthetic task under ZeRO-3 in about a minute
on two CPU cores. Every flag maps to a :class:`~rpt_fast.train.config.TrainConfig` field."""

from __future__ import annotations

import argparse
import os
import sys

from ..presets import T5_PRESETS
from . import launch_env
from .config import DEFAULT_STEPS, EVAL_MODES, OFFLOAD_DEVICES, PROMPT_INITS, ZERO_STAGES, TrainConfig


def _zero_stage(text: str):
    if text == "auto":
        return text
    if text not in tuple(str(stage) for stage in ZERO_STAGES):
        raise argparse.ArgumentTypeError(f"expected auto or one of {ZERO_STAGES}, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="rpt-train",
        description="Residual Prompt Tuning of a frozen backbone (plain PyTorch or DeepSpeed ZeRO).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=d.model,
                   help=f"a local Hugging Face checkpoint directory, or a random-weight preset: {', '.join(T5_PRESETS)}")
    g.add_argument("--tokenizer", default=None,
                   help="local tokenizer directory (default: the model directory's, else byte-level ByT5)")
    g.add_argument("--task", default=d.task, help="synthetic, jsonl, or a SuperGLUE task (boolq, cb, copa, ...)")
    g.add_argument("--data-dir", default=None, help="folder with the task's JSONL files")
    g.add_argument("--max-train-examples", type=int, default=None)
    g.add_argument("--max-eval-examples", type=int, default=None)
    g.add_argument("--max-input-length", type=int, default=d.max_input_length, help="tokens, inputs truncated")
    g.add_argument("--max-target-length", type=int, default=d.max_target_length,
                   help="tokens; also the generation length at evaluation")
    g.add_argument("--backbone-dropout", type=float, default=None,
                   help="override the backbone config's dropout rates (default: keep them)")

    g = p.add_argument_group("residual prompt (the paper's knobs)")
    g.add_argument("--num-tokens", type=int, default=d.num_tokens, help="prompt length")
    g.add_argument("--bottleneck", type=int, default=d.bottleneck, help="MLP bottleneck width")
    g.add_argument("--separate", action="store_true", help="one MLP per prompt token")
    g.add_argument("--prompt-dropout", type=float, default=d.prompt_dropout, help="dropout inside the MLP")
    g.add_argument("--prompt-init", choices=PROMPT_INITS, default=d.prompt_init)
    g.add_argument("--backend", default=d.backend, help="kernel backend: auto, triton, native, eager")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="linear warmup, then linear decay to 0 at the last step")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch, split over ranks")
    g.add_argument("--eval-batch-size", type=int, default=None, help="global (default: 4x --batch-size, at least 8 per rank)")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training set (with neither this nor --max-steps: {DEFAULT_STEPS} steps)")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (the first bound wins)")
    g.add_argument("--eval-interval", type=int, default=d.eval_interval,
                   help="steps between evaluations (also at step 0 and the end); 0: never")
    g.add_argument("--log-interval", type=int, default=d.log_interval)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                   help="clip the trainable parameters' gradient norm (0: no clipping); set in both modes")

    g = p.add_argument_group("scale")
    g.add_argument("--no-deepspeed", dest="deepspeed", action="store_false",
                      help="plain PyTorch, one process (the reference the DeepSpeed path is tested against)")
    g.add_argument("--zero-stage", type=_zero_stage, default=d.zero_stage,
                   help=f"auto (from the memory planner and the device's memory) or one of {ZERO_STAGES}")
    g.add_argument("--offload-param", choices=("auto", *OFFLOAD_DEVICES), default=d.offload_param,
                   help="ZeRO-3 parameter offload (auto: chosen with --zero-stage auto)")
    g.add_argument("--nvme-path", default=None, help="folder for --offload-param nvme")
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--gradient-checkpointing", action="store_true")
    g.add_argument("--max-live-parameters", type=int, default=d.max_live_parameters,
                   help="ZeRO-3: most gathered parameters kept live (default: from the model's sizes)")
    g.add_argument("--gpu-memory", default=None,
                   help="device memory per rank for the auto choice, e.g. 80GB (default: the GPU's, or RAM on CPU)")
    g.add_argument("--eval-mode", choices=EVAL_MODES, default=d.eval_mode,
                   help="generate: greedy decoding; likelihood: pick the likeliest label string (classification)")
    g.add_argument("--plan", action="store_true",
                   help="print this run's predicted GPU and host memory (rpt-memory) and exit")
    g.add_argument("--deepspeed-config", default=None,
                   help="a DeepSpeed JSON merged over the generated config (its keys win)")
    g.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)

    g = p.add_argument_group("output")
    g.add_argument("--output-dir", default=None, help="default: a new folder under ./rpt-runs/")
    g.add_argument("--save-interval", type=int, default=d.save_interval,
                   help="steps between checkpoints; 0: none")
    g.add_argument("--resume", action="store_true",
                   help="continue from --output-dir's latest checkpoint (starts fresh if it has none)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def _parse(argv: list[str] | None) -> tuple[TrainConfig, bool]:
    args = vars(build_parser().parse_args(argv))
    args.pop("local_rank")  # the deepspeed launcher passes it; LOCAL_RANK in the env says the same
    plan_only = args.pop("plan")
    return TrainConfig(**args), plan_only


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    return _parse(argv)[0]


def print_plan(cfg: TrainConfig) -> None:
    """The memory planner's prediction for this run (per rank), before anything is allocated;
    "auto" settings are chosen as the run would choose them (see :mod:`autoplan`)."""
    import torch

    from ..memory import format_plan, plan
    from . import autoplan

    launch = launch_env.discover()
    device = torch.device("cuda", launch.local_rank) if torch.cuda.is_available() else None
    cfg, reason = autoplan.resolve(cfg, launch.world_size, device, int(os.environ.get("LOCAL_WORLD_SIZE", launch.world_size)))
    if reason:
        print(reason)
    print(format_plan(plan(autoplan.planner_setup(cfg, launch.world_size))))


def main(argv: list[str] | None = None) -> None:
    cfg, plan_only = _parse(argv)
    try:
        cfg.validate()
        if plan_only:
            print_plan(cfg)
            return
    except ValueError as exc:
        build_parser().error(str(exc))
    from .distributed import choose_accelerator

    choose_accelerator()  # before anything imports DeepSpeed
    from .checkpoint import CheckpointError
    from .trainer import train

    try:
        train(cfg)
    except CheckpointError as exc:
        print(f"rpt-train: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
