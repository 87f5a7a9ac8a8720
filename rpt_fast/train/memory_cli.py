"""``rpt-memory``: the memory plan of the ``rpt-train`` run its flags describe, and
``rpt-train --plan``. The planner itself (:mod:`rpt_fast.memory`) knows nothing of training;
this is where it meets the run's flags and its "auto" choices (:mod:`autoplan`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ..memory import GIB, Setup, format_plan, plan
from ..step_time import DEVICES, format_seconds, format_step_time, step_time
from .errors import UsageError

# rpt-memory's old flags, now spelled as rpt-train spells them.
RENAMED_FLAGS = {
    "--source-length": "--max-input-length",
    "--target-length": "--max-target-length",
    "--grad-checkpointing": "--gradient-checkpointing",
    "--gradient-accumulation": "--gradient-accumulation-steps",
    "--dropout": "--backbone-dropout",
    "--fp32": "nothing (fp32 is the default; --bf16 for bfloat16)",
}
# The design goals --goals checks: (model, GPU memory in GiB), bf16, batch 8 per GPU, input 512,
# target 128, 100 prompt tokens, T5's dropout 0.1.
GOALS = (("t5-xl", 8), ("t5-xxl", 16))


def _device():
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None


def _world(world_size: int | None) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    if world < 1:
        raise UsageError("world_size", f"expected an int >= 1, got {world}")
    return world


def setup_for_run(cfg, world_size: int | None = None, gpu: str | None = None) -> tuple[Setup, str]:
    """(the planner's :class:`~rpt_fast.memory.Setup`, the reason for any "auto" choice) of an
    ``rpt-train`` run (a ``TrainConfig``) on ``world_size`` GPUs (default: the launcher's
    WORLD_SIZE, else 1), with "auto" settings chosen as the run itself chooses them
    (:func:`rpt_fast.train.autoplan.resolve`); ``gpu``: a step-time device preset."""
    from . import autoplan

    world = _world(world_size)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cfg, reason = autoplan.resolve(cfg, world, _device(), local_world, gpu)
    return autoplan.planner_setup(cfg, world), reason


def train_flags(chosen, base) -> str:
    """The memory settings of the run ``chosen`` as ``rpt-train`` flags to append to the
    command of ``base`` (argparse keeps a flag's last value), every one spelled out so that
    whatever ``base`` set is overridden. ZeRO-3's live limit is left to the run, which plans it
    from the same memory (or keeps ``base``'s own)."""
    if chosen.deepspeed:
        flags = [f"--zero-stage {chosen.zero_stage}", f"--offload-param {chosen.offload_param}"]
    else:
        flags = ["--no-deepspeed"]
    if chosen.gradient_checkpointing:
        flags.append("--gradient-checkpointing")
    if chosen.gradient_accumulation_steps != base.gradient_accumulation_steps:
        flags.append(f"--gradient-accumulation-steps {chosen.gradient_accumulation_steps}")
    return " ".join(flags)


def suggest(cfg, world: int, gpu: str | None, limit: int = 3) -> list[dict]:
    """Of the settings "auto" ranks (:func:`rpt_fast.train.autoplan.rank`), including those
    the command's own ``--zero-stage`` and ``--offload-param`` rule out, those predicted to fit
    the named GPU memory, fastest first; when none fits, the same with more gradient
    accumulation (smaller micro-batches, the same global batch). What appended flags cannot
    undo stays as given: ``--gradient-checkpointing``, ``--max-live-parameters`` and
    ``--no-deepspeed`` (then only checkpointing and accumulation vary)."""
    from . import autoplan

    free = dataclasses.replace(cfg, zero_stage="auto" if cfg.deepspeed else 0,
                               offload_param="auto" if cfg.deepspeed else "none")
    device = _device()
    sizes = autoplan.model_sizes(free)
    budget, _ = autoplan.device_memory(free, device, 1, gpu)
    device_model = autoplan.step_device(gpu, device, True)
    per_rank = cfg.batch_size // world
    for accumulation in range(cfg.gradient_accumulation_steps, per_rank + 1):
        if per_rank % accumulation:
            continue
        ranked = autoplan.rank(dataclasses.replace(free, gradient_accumulation_steps=accumulation), world,
                               sizes, budget, True, device_model)
        fitting = [c for c in ranked if c.need <= budget][:limit]
        if fitting:
            return [{"flags": train_flags(c.cfg, cfg), "gpu_total": c.need, "step_time": c.seconds,
                     "setup": dataclasses.asdict(autoplan.planner_setup(c.cfg, world, sizes))} for c in fitting]
    return []


def _result(cfg, world_size: int | None, gpu: str | None = None) -> dict:
    """The plan of an ``rpt-train`` run, its predicted step time, the reason for its "auto"
    choices, and where the run names its GPU (``--gpu-memory``, e.g. "80GB", or rpt-memory's
    ``--gpu``) the verdict and the settings predicted to fit, fastest first. The run is
    checked as rpt-train checks it (the batch split over ranks, ``--no-deepspeed``)."""
    from . import autoplan
    from ..memory import load_arch
    from .preflight import check_scale

    world = _world(world_size)
    check_scale(cfg, world)
    s, reason = setup_for_run(cfg, world, gpu)
    device = _device()
    device_model = autoplan.step_device(gpu, device, bool(cfg.gpu_memory or gpu) or device is not None)
    p = plan(s)
    result: dict = {"plan": p, "choice": reason, "setup": s,
                    "step_time": step_time(s, load_arch(s.model), device_model)}
    if cfg.gpu_memory or gpu:
        budget, _ = autoplan.device_memory(cfg, None, 1, gpu)
        result.update(gpu_memory=budget, fits=p["gpu_total"] <= budget, suggestions=suggest(cfg, world, gpu))
    return result


def format_verdict(p: dict, gpu_bytes: float, suggestions: list[dict]) -> str:
    """Whether plan ``p`` fits a GPU of ``gpu_bytes``, in plain words, and the settings that
    would (fastest first) as flags to paste."""
    need, have = p["gpu_total"] / GIB, gpu_bytes / GIB
    if p["gpu_total"] <= gpu_bytes:
        lines = [f"fits: about {need:.2f} GiB per GPU predicted, {have:.2f} GiB available."]
    else:
        lines = [f"does not fit: about {need:.2f} GiB per GPU predicted, only {have:.2f} GiB available."]
    if suggestions:
        lines.append("settings predicted to fit, fastest first by the step-time model "
                     "(append to the rpt-train command):")
        lines += [f"  {q['flags']}    # about {q['gpu_total'] / GIB:.2f} GiB per GPU, "
                  f"{format_seconds(q['step_time'])} per step" for q in suggestions]
    else:
        lines.append("no setting tried fits (NVMe offload is tried only with --nvme-path); lower "
                     "--batch-size, --max-input-length or --num-tokens.")
    return "\n".join(lines)


def _text(result: dict) -> str:
    lines = ([result["choice"]] if result["choice"] else []) + [format_plan(result["plan"]),
                                                                 format_step_time(result["step_time"])]
    if "gpu_memory" in result:
        lines.append(format_verdict(result["plan"], result["gpu_memory"], result["suggestions"]))
    return "\n".join(lines)


def report_plan(cfg, world_size: int | None, gpu: str | None = None) -> tuple[str, bool]:
    """The plan of an ``rpt-train`` run as text, with a verdict and pasteable ``rpt-train``
    flags when the run names its GPU memory (``--gpu-memory``, e.g. "80GB"), and whether it
    fits (True where no GPU memory is named): ``rpt-train --plan`` exits 1 when it does not."""
    result = _result(cfg, world_size, gpu)
    return _text(result), result.get("fits", True)


def goals(cfg, world: int) -> list[dict]:
    """The design goals (:data:`GOALS`), the other settings from ``cfg``: whether the fastest
    setting predicted to fit exists, and which."""
    out = []
    for model, gib in GOALS:
        goal = dataclasses.replace(cfg, model=model, batch_size=8 * world, max_input_length=512,
                                   max_target_length=128, num_tokens=100, bf16=True, backbone_dropout=0.1,
                                   gradient_accumulation_steps=1, gpu_memory=f"{gib}GB")
        found = suggest(goal, world, None, limit=1)
        out.append({"model": model, "gpu_memory": gib * GIB, "fits": bool(found),
                    "settings": found[0] if found else None})
    return out


def build_parser() -> argparse.ArgumentParser:
    """``rpt-train``'s flags with the same meaning (a global ``--batch-size``, the same lengths
    and defaults), plus ``--gpu``, ``--goals`` and ``--json``."""
    from .flags import build_parser as train_parser

    ap = train_parser("rpt-memory", planner=True)
    ap.hints = RENAMED_FLAGS
    g = ap.add_argument_group("planner")
    g.add_argument("--gpu", choices=tuple(DEVICES), default=None,
                   help="the GPU: its memory (unless --gpu-memory is given) and its rates for the predicted step "
                        "times (default: this machine's GPU, else an H100's rates)")
    g.add_argument("--goals", action="store_true",
                   help="check the design goals: T5-XL in 8 GB, T5-XXL in 16 GB (bf16, batch 8 per GPU, input 512, target 128)")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")
    return ap


def _print(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `rpt-memory ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit


def main(argv=None) -> int:
    """``rpt-memory``: the plan of the ``rpt-train`` run its flags describe. Exit code 0, or 1
    when the run (or a goal, with ``--goals``) is predicted not to fit the GPU it names; 2 for a
    usage error."""
    from .config import as_usage_error
    from .errors import debug_requested, exit_with
    from .flags import parse

    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, options = parse(argv, build_parser())
    try:
        cfg.validate()
        result = _result(cfg, options["world_size"], options["gpu"])
        del result["setup"]
        if options["goals"]:
            result["goals"] = goals(cfg, _world(options["world_size"]))
    except (ValueError, FileNotFoundError) as exc:
        usage = as_usage_error(exc) if isinstance(exc, ValueError) else None
        if debug_requested(argv):
            raise
        exit_with("rpt-memory", str(usage or exc))
    if options["json"]:
        _print(json.dumps(result, indent=2))
    else:
        lines = [_text(result)]
        for g in result.get("goals", []):
            verdict = f"fits with {g['settings']['flags']}" if g["fits"] else "does NOT fit"
            lines.append(f"goal {g['model']} in {g['gpu_memory'] / GIB:.0f} GB: {verdict}")
        _print("\n".join(lines))
    fits = result.get("fits", True) and all(g["fits"] for g in result.get("goals", []))
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
