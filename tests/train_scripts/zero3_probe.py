"""Runs one training (the command-line arguments of ``rpt-train``) while measuring ZeRO-3:
how much of the frozen backbone each rank stores, the most of it ever gathered at once during
the forward and backward passes (sampled by module hooks), and how often each fused backend's
forward and backward ran (so a silent eager fallback fails the test). Writes
``<output-dir>/probe-rank<r>.json``; launched by the tests, with or without ``deepspeed``."""

import json
import os
import sys

from rpt_fast.train.cli import config_from_args
from rpt_fast.train.distributed import barrier, choose_accelerator, init_distributed

choose_accelerator()

from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus  # noqa: E402

from rpt_fast.ops import load_backend  # noqa: E402
from rpt_fast.train import trainer  # noqa: E402

KERNELS = ("residual_mlp_forward", "residual_mlp_backward",
           "grouped_residual_mlp_forward", "grouped_residual_mlp_backward")


def count_kernel_calls(backend: str) -> dict:
    """Wraps the backend module's entry points with counters; returns {name: calls}. The native
    ops carry their autograd in C++: their forward entry is counted, and their backward by a
    hook on the autograd node each forward returns."""
    module, calls = load_backend(backend), {name: 0 for name in KERNELS}

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    def counted_autograd(op, fn):
        def backward_ran(*_):
            calls[f"{op}_backward"] += 1

        def wrapper(*args):
            calls[f"{op}_forward"] += 1
            y = fn(*args)
            if y.grad_fn is not None:
                y.grad_fn.register_hook(backward_ran)
            return y
        return wrapper

    if backend == "native":
        for op in ("residual_mlp", "grouped_residual_mlp"):
            setattr(module, op, counted_autograd(op, getattr(module, op)))
    else:
        for name in KERNELS:
            setattr(module, name, counted(name, getattr(module, name)))
    return calls


def main() -> None:
    cfg = config_from_args(sys.argv[1:]).validate()
    calls = {b: count_kernel_calls(b) for b in ("native", "triton")}
    info = init_distributed(cfg.deepspeed)
    run = trainer.Run(cfg, info)
    if info.is_main:  # rpt-train makes the run folder once training starts; so does this script
        os.makedirs(run.out, exist_ok=True)
    barrier(info)
    backbone = run.model.backbone
    frozen = [p for p in backbone.parameters() if not p.requires_grad]
    total = sum(p.ds_numel for p in frozen)
    stored = sum(p.ds_tensor.numel() for p in frozen)
    peak = {"forward": 0, "backward": 0}

    def sample(phase):
        def hook(*_):
            live = sum(p.ds_numel for p in frozen if p.ds_status != ZeroParamStatus.NOT_AVAILABLE)
            peak[phase] = max(peak[phase], live)
        return hook

    for module in backbone.modules():
        module.register_forward_pre_hook(sample("forward"))
        module.register_forward_hook(sample("forward"))
        module.register_full_backward_pre_hook(sample("backward"))
        module.register_full_backward_hook(sample("backward"))
    trainer._run_loop(run)
    result = {"total": total, "stored": stored, "peak_forward": peak["forward"],
              "peak_backward": peak["backward"], "world_size": info.world_size, "calls": calls}
    with open(os.path.join(run.out, f"probe-rank{info.rank}.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
