"""``rpt-train``'s flags, read by ``rpt-train`` (:mod:`cli`) and ``rpt-memory`` (:mod:`memory_cli`)
alike: every flag named after a :class:`~rpt_fast.train.config.TrainConfig` field sets that
setting (``--num-tokens`` -> ``num_tokens``), the others (``--plan``, ``--debug``, ``--config``,
...) steer the program. ``--config FILE`` reads settings from a YAML or JSON file
(:mod:`config_file`); flags on the command line win over the file."""

from __future__ import annotations

import argparse

from ..ops import BACKENDS
from ..presets import PRESETS
from .config import (ACTIVATIONS, DEFAULT_STEPS, EVAL_MODES, EVAL_SPLITS, LR_SCHEDULERS, OFFLOAD_DEVICES,
                     PROMPT_INITS, REPARAMS, REPORT_TO, WSC_FORMATS, ZERO_STAGES, TrainConfig, field_names)
from .errors import UsageError, exit_with


def _zero_stage(text: str):
    if text == "auto":
        return text
    if text not in tuple(str(stage) for stage in ZERO_STAGES):
        raise argparse.ArgumentTypeError(f"expected auto or one of {ZERO_STAGES}, got {text!r}")
    return int(text)


def _resume(text: str) -> str:
    if text != "auto":
        raise argparse.ArgumentTypeError(f"expected nothing or auto, got {text!r} (the run's folder is --output-dir)")
    return text


class HelpFormatter(argparse.HelpFormatter):
    """Shows each flag's real default after its help, except where the help already says it
    (it contains "default"), for on/off flags (their help says what they do) and for None
    defaults (the help says what happens without the flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (no usage block), printed once per node;
    ``hints`` maps a flag it does not know to the one to use instead."""

    hints: dict[str, str] = {}

    def error(self, message: str):
        if message.startswith("argument "):
            message = message[len("argument "):]  # "argument --lr: invalid float value: 'x'"
        hints = [f"{old}: use {new}" for old, new in self.hints.items() if old in message.split()]
        exit_with(self.prog, f"{message}{' (' + '; '.join(hints) + ')' if hints else ''} (see {self.prog} --help)")


def build_parser(prog: str = "rpt-train", *, planner: bool = False) -> argparse.ArgumentParser:
    """``rpt-train``'s flags; ``planner``: as ``rpt-memory`` reads them (no ``--plan``, the plan
    is all it does)."""
    d = TrainConfig()
    p = Parser(
        prog=prog,
        description="Residual Prompt Tuning of a frozen backbone (plain PyTorch or DeepSpeed ZeRO)."
        if not planner else "Predicts the GPU and host memory of the rpt-train run that the same flags "
        "describe, before anything is allocated, and with --gpu-memory whether it fits and what would.",
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("settings file")
    g.add_argument("--config", metavar="FILE", default=None,
                   help="read settings from a YAML or JSON file, keys named as in a run's config.json (lr, "
                        "max_steps, ...; a run's own config.json reproduces it); flags given here win (default: none)")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=d.model,
                   help=f"a local Hugging Face checkpoint directory, or a random-weight preset: {', '.join(PRESETS)}")
    g.add_argument("--tokenizer", default=None,
                   help="local tokenizer directory (default: the model directory's, else byte-level ByT5)")
    g.add_argument("--task", default=d.task, help="synthetic, jsonl, or a SuperGLUE task (boolq, cb, copa, ...)")
    g.add_argument("--data-dir", default=None,
                   help="folder with the task's train.jsonl and val.jsonl (default: none, for --task synthetic)")
    g.add_argument("--max-train-examples", type=int, default=None,
                   help="keep a seeded random subset of this many training examples (default: all)")
    g.add_argument("--max-eval-examples", type=int, default=None,
                   help="keep a seeded random subset of this many evaluation examples (default: all)")
    g.add_argument("--max-input-length", type=int, default=d.max_input_length, help="tokens, longer inputs are cut")
    g.add_argument("--max-target-length", type=int, default=d.max_target_length,
                   help="tokens, targets truncated; for T5 also the generation length of tasks without an official one")
    g.add_argument("--backbone-dropout", type=float, default=None,
                   help="set the backbone config's dropout rates (default: the config's own)")
    g.add_argument("--chat-template", action="store_true",
                   help="decoder-only: each input becomes a user turn of the tokenizer's chat template, the target "
                        "the assistant's reply (default: input, a newline, target)")

    g = p.add_argument_group("residual prompt (the paper's knobs)")
    g.add_argument("--num-tokens", type=int, default=d.num_tokens, help="prompt length")
    g.add_argument("--bottleneck", type=int, default=d.bottleneck, help="MLP bottleneck width")
    g.add_argument("--separate", action="store_true", help="one MLP per prompt token (default: one shared MLP)")
    g.add_argument("--prompt-dropout", type=float, default=d.prompt_dropout, help="dropout inside the MLP")
    g.add_argument("--prompt-init", choices=PROMPT_INITS, default=d.prompt_init,
                   help="initial prompt: rows of the vocabulary embedding, or random")
    g.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="kernels of the prompt MLP (auto: Triton on GPU, native C++ on CPU)")
    g.add_argument("--skip-self-check", action="store_true",
                   help="do not check the prompt MLP's op against the float64 reference before the first step")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="linear warmup from 0 to --lr, then the --lr-scheduler")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch, split over ranks")
    g.add_argument("--eval-batch-size", type=int, default=None, help="global (default: 4x --batch-size, at least 8 per rank)")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training set (default: with no --max-steps either, {DEFAULT_STEPS} steps)")
    g.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps; with --epochs the first bound wins (default: none)")
    g.add_argument("--eval-interval", type=int, default=d.eval_interval,
                   help="steps between evaluations (also at step 0 and the end); 0: never")
    g.add_argument("--log-interval", type=int, default=d.log_interval,
                   help="steps between training-loss records and progress-bar updates")
    g.add_argument("--seed", type=int, default=d.seed, help="data order, prompt init, preset weights, dropout")
    g.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                   help="clip the trainable parameters' gradient norm (0: no clipping); set in both modes")

    g = p.add_argument_group("the official recipe (arazd/ResidualPrompts)")
    g.add_argument("--reparam", choices=REPARAMS, default=d.reparam,
                   help="residual: the MLP reparameterization; none: plain prompt tuning (official --prefix_MLP None)")
    g.add_argument("--no-layer-norm", dest="layer_norm", action="store_false", help="MLP ablation: no LayerNorm")
    g.add_argument("--no-residual", dest="residual", action="store_false", help="MLP ablation: no skip connection")
    g.add_argument("--activation", choices=ACTIVATIONS, default=d.activation, help="MLP ablation: the nonlinearity")
    g.add_argument("--mlp-lr", type=float, default=None, metavar="LR", help="the MLP's learning rate (default: --lr)")
    g.add_argument("--mlp-weight-decay", type=float, default=None, metavar="WD",
                   help="the MLP's weight decay (default: --weight-decay)")
    g.add_argument("--lr-scheduler", choices=LR_SCHEDULERS, default=d.lr_scheduler,
                   help="after warmup: constant (the official) or linear decay to 0 at the last step")
    g.add_argument("--gradient-accumulation-steps", type=int, default=d.gradient_accumulation_steps, metavar="N",
                   help="micro-batches per step; --batch-size stays the global batch (per rank: batch / (ranks * N))")
    g.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="generation length at evaluation (default: T5: the task's official length, else "
                        "--max-target-length; decoder-only: the longest training target)")
    g.add_argument("--few-shot", type=int, default=None, metavar="K",
                   help="K training examples per label, seeded (record, wsc: K in all) (default: all examples)")
    g.add_argument("--eval-split", choices=EVAL_SPLITS, default=d.eval_split,
                   help="halves: the official val/test split; the test half is scored once with the best prompt")
    g.add_argument("--wsc-format", choices=WSC_FORMATS, default=d.wsc_format,
                   help="span: whole spans marked and as target; official: first word only, as t5_dataset.py")

    g = p.add_argument_group("scale")
    g.add_argument("--no-deepspeed", dest="deepspeed", action="store_false",
                   help="train with plain PyTorch in one process instead of DeepSpeed")
    g.add_argument("--zero-stage", type=_zero_stage, default=d.zero_stage,
                   help=f"DeepSpeed ZeRO stage, one of {ZERO_STAGES} (3 partitions the frozen backbone over the "
                        "ranks), or auto: the fastest the memory planner predicts to fit the device")
    g.add_argument("--offload-param", choices=("auto", *OFFLOAD_DEVICES), default=d.offload_param,
                   help="where ZeRO-3 keeps the backbone between uses (auto: chosen with --zero-stage auto)")
    g.add_argument("--nvme-path", default=None, help="folder for --offload-param nvme (default: none)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 backbone and compute (default: fp32)")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute the backbone's activations in backward: less memory, more time")
    g.add_argument("--max-live-parameters", type=int, default=d.max_live_parameters,
                   help="ZeRO-3: most gathered backbone parameters kept at once, prefetch half of it (default: "
                        "what the device memory leaves for the model and world size, at least two blocks)")
    g.add_argument("--gpu-memory", default=None,
                   help="memory per GPU, e.g. 80GB: for the auto choice, and with --plan the fits / does not fit "
                        "verdict (default: the GPU's own, or the host's RAM per rank on CPU)")
    g.add_argument("--eval-mode", choices=EVAL_MODES, default=d.eval_mode,
                   help="generate: greedy decoding; likelihood: pick the likeliest label string (classification)")
    g.add_argument("--deepspeed-config", default=None,
                   help="a DeepSpeed JSON merged over the generated config, its keys win (default: none)")
    g.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)

    g = p.add_argument_group("memory plan")
    with_plan = "" if planner else "with --plan: "
    if not planner:
        g.add_argument("--plan", action="store_true",
                       help="print this run's predicted memory per GPU and host (as rpt-memory does) and exit")
    g.add_argument("--world-size", type=int, default=None,
                   help=f"{with_plan}number of GPUs (default: the launcher's WORLD_SIZE, else 1)")

    g = p.add_argument_group("output")
    g.add_argument("--output-dir", default=None,
                   help="the run's folder (default: a new folder under ./rpt-runs/, made when training starts)")
    g.add_argument("--save-interval", type=int, default=d.save_interval,
                   help="steps between checkpoints; 0: none in between (the last step and a stop "
                        "signal write one anyway)")
    g.add_argument("--save-total-limit", type=int, default=d.save_total_limit,
                   help="checkpoints kept, the newest ones")
    g.add_argument("--resume", nargs="?", const=True, default=d.resume, type=_resume, metavar="auto",
                   help="continue --output-dir's run from its latest checkpoint with the run's own settings "
                        "(refused where it has none); --resume auto: continue if there is a checkpoint, else "
                        "start the run (default: start a new run)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    g.add_argument("--report-to", choices=REPORT_TO, default=d.report_to,
                   help="tensorboard: also write the metrics as TensorBoard scalars (needs the tensorboard package)")
    g.add_argument("--debug", action="store_true",
                   help="show the traceback of a user error too (or set RPT_DEBUG=1)")
    return p


def parse(argv: list[str] | None, parser: argparse.ArgumentParser | None = None) -> tuple[TrainConfig, dict]:
    """``(settings, program options)``: flags named after a TrainConfig field are settings, the
    rest (``--plan``, ``--debug``, ``--config``, the launcher's ``--local_rank``, ...) options.
    A ``--config`` file's settings count where the command line does not give them;
    ``options["explicit"]`` names the settings the command line or the file gave (``--resume``
    refuses those that would change the run, :mod:`resume`)."""
    parser = parser or build_parser()
    dests = {action.dest for action in parser._actions if action.dest != argparse.SUPPRESS}
    unset = object()  # argparse fills in a default only where the namespace has no value yet
    given = vars(parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(dests, unset))))
    given = {key: value for key, value in given.items() if value is not unset}
    fields = set(field_names())
    options = {key: given.get(key, parser.get_default(key)) for key in dests - fields}
    from_file = {}
    if options["config"] is not None:
        from .config_file import load

        try:
            from_file = load(options["config"], parser)
        except UsageError as exc:
            parser.error(str(exc))
    settings = {**from_file, **{key: value for key, value in given.items() if key in fields}}
    options["explicit"] = frozenset(settings)
    defaults = {key: parser.get_default(key) for key in fields - settings.keys()}
    return TrainConfig(**defaults, **settings), options
