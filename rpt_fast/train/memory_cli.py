"""``rpt-memory``: the memory plan of the ``rpt-train`` run its flags describe, and
``rpt-train --plan``. The planner itself (:mod:`rpt_fast.memory`) knows nothing of training;
this is where it meets the run's flags and its "auto" choices (:mod:`autoplan`)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..memory import GIB, Setup, format_plan, format_verdict, goals, parse_bytes, plan, suggest, train_flags

# rpt-memory's old flags, now spelled as rpt-train spells them.
RENAMED_FLAGS = {
    "--source-length": "--max-input-length",
    "--target-length": "--max-target-length",
    "--grad-checkpointing": "--gradient-checkpointing",
    "--gradient-accumulation": "--gradient-accumulation-steps",
    "--dropout": "--backbone-dropout",
    "--fp32": "nothing (fp32 is the default; --bf16 for bfloat16)",
}


def setup_for_run(cfg, world_size: int | None = None) -> tuple[Setup, str]:
    """(the planner's :class:`~rpt_fast.memory.Setup`, the reason for any "auto" choice) of an
    ``rpt-train`` run (a ``TrainConfig``) on ``world_size`` GPUs (default: the launcher's
    WORLD_SIZE, else 1), with "auto" settings chosen as the run itself chooses them
    (:func:`rpt_fast.train.autoplan.resolve`)."""
    import torch

    from . import autoplan

    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cfg, reason = autoplan.resolve(cfg, world, device, local_world)
    return autoplan.planner_setup(cfg, world), reason


def _result(cfg, world_size: int | None) -> dict:
    """The plan of an ``rpt-train`` run, the reason for its "auto" choices, and where the run
    names its GPU memory (``--gpu-memory``, e.g. "80GB") the verdict and suggested settings."""
    s, reason = setup_for_run(cfg, world_size)
    result: dict = {"plan": plan(s), "choice": reason, "setup": s}
    if cfg.gpu_memory:
        budget = parse_bytes(cfg.gpu_memory)
        result.update(gpu_memory=budget, fits=result["plan"]["gpu_total"] <= budget,
                      suggestions=suggest(s, budget))
    return result


def _text(result: dict) -> str:
    lines = ([result["choice"]] if result["choice"] else []) + [format_plan(result["plan"])]
    if "gpu_memory" in result:
        lines.append(format_verdict(result["plan"], result["gpu_memory"], result["suggestions"]))
    return "\n".join(lines)


def report_plan(cfg, world_size: int | None) -> str:
    """The plan of an ``rpt-train`` run as text, with a verdict and pasteable ``rpt-train``
    flags when the run names its GPU memory (``--gpu-memory``, e.g. "80GB")."""
    return _text(_result(cfg, world_size))


def build_parser() -> argparse.ArgumentParser:
    """``rpt-train``'s flags with the same meaning (a global ``--batch-size``, the same lengths
    and defaults), plus ``--goals`` and ``--json``."""
    from .flags import build_parser as train_parser

    ap = train_parser("rpt-memory", planner=True)
    ap.hints = RENAMED_FLAGS
    g = ap.add_argument_group("planner")
    g.add_argument("--goals", action="store_true",
                   help="check the design goals: T5-XL in 8 GB, T5-XXL in 16 GB (bf16, batch 8 per GPU, input 512, target 128)")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")
    return ap


def main(argv=None) -> int:
    """``rpt-memory``: the plan of the ``rpt-train`` run its flags describe."""
    from .config import as_usage_error
    from .errors import debug_requested, exit_with
    from .flags import parse

    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, options = parse(argv, build_parser())
    try:
        cfg.validate()
        result = _result(cfg, options["world_size"])
        setup = result.pop("setup")
        if options["goals"]:
            result["goals"] = goals(setup)
    except (ValueError, FileNotFoundError) as exc:
        usage = as_usage_error(exc) if isinstance(exc, ValueError) else None
        if debug_requested(argv):
            raise
        exit_with("rpt-memory", str(usage or exc))
    if options["json"]:
        print(json.dumps(result, indent=2))
        return 0
    print(_text(result))
    for g in result.get("goals", []):
        verdict = f"fits with {train_flags(g['settings'])}" if g["fits"] else "does NOT fit"
        print(f"goal {g['model']} in {g['gpu_memory'] / GIB:.0f} GB: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
