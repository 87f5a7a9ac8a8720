"""Builds an ``rpt-train`` run (``--bf16`` or not) under each setting given, takes one training
step, and records the dtypes that matter: the trainable parameters (and their ZeRO-3
partitions), their gradients' communication dtype, the backbone (``backbone``: its first
partition; ``backbone_all``: every parameter and partition). Usage:
``precision_probe.py OUT.json SETTINGS <rpt-train arguments>``; SETTINGS is a comma list of
ZeRO stages, each optionally with a parameter offload (``0,1,2,3`` or ``3/cpu,3/nvme``), or
``plain`` (``--no-deepspeed``). Next to OUT.json each setting's trainable parameters as built
(gathered, before any step) go to ``OUT.<setting>.safetensors`` (``3/nvme``: ``OUT.3-nvme...``)."""

import dataclasses
import json
import os
import sys

from rpt_fast.train.cli import config_from_args
from rpt_fast.train.distributed import choose_accelerator, init_distributed

choose_accelerator()

from safetensors.torch import save_file  # noqa: E402

from rpt_fast.train import trainer  # noqa: E402
from rpt_fast.train.export import gathered, trainable_tensors  # noqa: E402


def nvme_swaps(run) -> bool | None:
    """Whether the backbone's NVMe swapper would take the largest trainable partition (so the
    fix, not the size, keeps it out of the bf16 swap buffers); None without NVMe offload."""
    swapper = getattr(next(run.model.backbone.parameters()), "nvme_swapper", None)
    if swapper is None:
        return None
    largest = max(p.ds_tensor.ds_numel for p in run.model.trainable_parameters())
    return bool(swapper.swappable_tensor(numel=largest))


def probe(cfg, info, tensors_path: str) -> dict:
    run = trainer.Run(cfg, info)
    params = run.model.trainable_parameters()
    with gathered(run.model):
        built = trainable_tensors(run.model)
    if info.is_main:
        save_file(built, tensors_path)
    swaps = nvme_swaps(run) if cfg.deepspeed else None
    before = [p.ds_tensor.clone() if hasattr(p, "ds_tensor") else p.detach().clone() for p in params]
    loss = run.train_step(0)
    after = [p.ds_tensor if hasattr(p, "ds_tensor") else p.detach() for p in params]
    frozen = next(p for p in run.model.backbone.parameters())
    optimizer = getattr(run.engine, "optimizer", None)
    return {
        "loss": float(loss),
        "trainable": sorted({str(p.dtype) for p in params}),
        "trainable_stored": sorted({str(t.dtype) for t in after}),
        "changed": all(not a.equal(b) for a, b in zip(after, before)),
        "backbone": str(getattr(frozen, "ds_tensor", frozen).dtype),
        "backbone_all": sorted({str(t.dtype) for p in run.model.backbone.parameters()
                                for t in (p, getattr(p, "ds_tensor", p))}),
        "engine_communication": str(run.engine.communication_data_type) if run.engine is not None else None,
        "zero3_communication": str(getattr(optimizer, "communication_data_type", None)),
        "nvme_swaps_largest_trainable": swaps,
    }


def main() -> None:
    out, settings, *args = sys.argv[1:]
    base = config_from_args(args)
    info = init_distributed(True)
    results = {}
    for setting in settings.split(","):
        name = setting.replace("/", "-")
        if setting == "plain":
            changes = {"deepspeed": False, "zero_stage": 0, "offload_param": "none"}
        else:
            stage, _, offload = setting.partition("/")
            changes = {"zero_stage": int(stage), "offload_param": offload or "none"}
        cfg = dataclasses.replace(base, output_dir=os.path.join(base.output_dir, name), **changes).validate()
        results[setting] = probe(cfg, info, f"{os.path.splitext(out)[0]}.{name}.safetensors")
    if info.is_main:
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
