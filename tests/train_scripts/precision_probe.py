"""Builds an ``rpt-train`` run with ``--bf16`` under each ZeRO stage given, takes one training
step, and records the dtypes that matter: the trainable parameters (and their ZeRO-3
partitions), their gradients' communication dtype, the backbone. Usage:
``precision_probe.py OUT.json STAGES <rpt-train arguments>`` (STAGES like 0,1,2,3)."""

import dataclasses
import json
import os
import sys

from rpt_fast.train.cli import config_from_args
from rpt_fast.train.distributed import choose_accelerator, init_distributed

choose_accelerator()

from rpt_fast.train import trainer  # noqa: E402


def probe(cfg, info) -> dict:
    run = trainer.Run(cfg, info)
    params = run.model.trainable_parameters()
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
        "engine_communication": str(run.engine.communication_data_type),
        "zero3_communication": str(getattr(optimizer, "communication_data_type", None)),
    }


def main() -> None:
    out, stages, *args = sys.argv[1:]
    base = config_from_args(args)
    info = init_distributed(True)
    results = {}
    for stage in stages.split(","):
        cfg = dataclasses.replace(base, zero_stage=int(stage), offload_param="none",
                                  output_dir=os.path.join(base.output_dir, f"zero{stage}")).validate()
        results[stage] = probe(cfg, info)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
