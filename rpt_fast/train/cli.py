"""``rpt-train``: the command line. With no arguments it runs the demo: a tiny random-weight T5
with the byte-level tokenizer learns the built-in synthetic task under ZeRO-3 in about a minute
on two CPU cores. Every flag maps to the :class:`~rpt_fast.train.config.TrainConfig` field of
its name (``--num-tokens`` -> ``num_tokens``); the others (``--plan``, ``--debug``, ...) steer
the program (:mod:`flags`, shared with ``rpt-memory``); ``--config FILE`` reads settings from a
file; ``--resume`` continues a run with its saved settings (:mod:`resume`).

A user error (a bad flag, a missing path, a malformed data file, a checkpoint that cannot be
resumed) ends the run with one line, ``rpt-train: error: --flag: ...``, and exit code 2, on
every rank (the first process of each node prints it); ``--debug`` or ``RPT_DEBUG=1`` adds the
traceback. Inputs are checked before any process group or model exists (:mod:`preflight`) and
the output folder is created only when training starts. SIGINT and SIGTERM stop the run with a
checkpoint and one line, exit code 130 or 143 (:mod:`stopping`).
"""

from __future__ import annotations

import signal
import sys

from . import stopping
from .config import TrainConfig, as_usage_error
from .errors import UsageError, debug_requested, exit_with, reports_errors
from .flags import parse


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    return parse(argv)[0]


def finished_line(cfg: TrainConfig, step: int, num_examples: int) -> str:
    """What ``--resume`` says of a run that trained all its steps, and what would train it on
    (``num_examples``: the training set's size)."""
    if cfg.lr_scheduler == "linear":  # a resume that changes the run's length is refused
        further = ("its --lr-scheduler linear schedule decayed to 0 at its last step, so a resume cannot train it "
                   "further (a new run in another --output-dir can train longer)")
    else:
        from .data import StepSampler

        steps_per_epoch = StepSampler(num_examples, cfg.batch_size, cfg.seed, 0, 1,
                                      accumulation=cfg.gradient_accumulation_steps).steps_per_epoch
        flags = cfg.length_flags(steps_per_epoch)
        further = (f"a larger {flags[0]} trains it further" if len(flags) == 1 else
                   f"larger {' and '.join(flags)} train it further")
    return f"rpt-train: the run in {cfg.output_dir} is finished (step {step} of {step}); {further}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg, options = parse(argv)
        if options["world_size"] is not None and not options["plan"]:
            raise UsageError("world_size", "only with --plan (the run itself takes its ranks from the launcher)")
        if options["plan"]:
            from .memory_cli import report_plan

            cfg.validate()
            text, fits = report_plan(cfg, options["world_size"])
            if reports_errors():  # under a launcher: once per node
                print(text, flush=True)
            if not fits:  # as rpt-memory: scripts can test the verdict
                sys.exit(1)
            return
        from .preflight import preflight
        from .resume import finished, prepare

        cfg, resumption = prepare(cfg.validate(), options["explicit"])  # a resumed run's own settings
        task = preflight(cfg)  # before the process group, DeepSpeed and the model
        if resumption is not None and finished(cfg, resumption, len(task.train)):
            if reports_errors():
                print(finished_line(cfg, resumption.step, len(task.train)), flush=True)
            return
        from .distributed import choose_accelerator

        choose_accelerator()  # before anything imports DeepSpeed
        from .trainer import train

        with stopping.interrupts():  # until the steps begin: at once, nothing to save yet
            train(cfg, task=task, resumption=resumption)
    except stopping.Stopped as exc:
        if reports_errors():
            print(f"rpt-train: {exc}", file=sys.stderr, flush=True)
        sys.exit(stopping.exit_code(exc.signum))
    except KeyboardInterrupt as exc:  # a signal outside the steps, or a repeat (stopping)
        if debug_requested(argv):
            raise
        signum = getattr(exc, "signum", signal.SIGINT)
        if reports_errors():
            saved = ("once the checkpoint being written was complete" if getattr(exc, "after_save", False)
                     else "without writing a checkpoint")
            print(f"rpt-train: stopped by {stopping.name(signum)} at once, {saved} (--resume continues from the "
                  "run's latest one, if it has one)", file=sys.stderr, flush=True)
        sys.exit(stopping.exit_code(signum))
    except Exception as exc:  # noqa: BLE001 - user errors become one line, the rest keeps its traceback
        from .checkpoint import CheckpointError

        usage = UsageError("resume", str(exc)) if isinstance(exc, CheckpointError) else as_usage_error(exc)
        if usage is None or debug_requested(argv):
            raise
        exit_with("rpt-train", str(usage))


if __name__ == "__main__":
    main()
