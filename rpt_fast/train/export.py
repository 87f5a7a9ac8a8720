"""Moves the small trainable state (P and the MLP) in and out of the model, gathered whole under
ZeRO-3, and writes the final exports: P' as safetensors and as a PEFT prompt-tuning adapter."""

from __future__ import annotations

import contextlib
import os
import shutil

import torch

from .distributed import DistInfo, barrier

PROMPT_FILE = "prompt.safetensors"
PEFT_DIR = "peft-adapter"


def gathered(model, modifier_rank: int | None = None):
    """Context in which the trainable parameters are whole on every rank (ZeRO-3 partitions
    them); with ``modifier_rank``, that rank's in-place changes are kept and scattered."""
    params = model.trainable_parameters()
    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def trainable_tensors(model) -> dict[str, torch.Tensor]:
    """CPU fp32 copies of the prompt encoder's parameters (call inside :func:`gathered`)."""
    return {
        name: param.detach().to("cpu", torch.float32).clone().contiguous()
        for name, param in model.prompt_encoder.named_parameters()
    }


@torch.no_grad()
def load_trainable(model, tensors: dict[str, torch.Tensor]) -> None:
    """Copies ``tensors`` (from :func:`trainable_tensors`) back into the prompt encoder."""
    with gathered(model, modifier_rank=0):
        for name, param in model.prompt_encoder.named_parameters():
            param.data.copy_(tensors[name].to(param.device, param.dtype))


def export_prompt(model, out: str, info: DistInfo) -> dict[str, str]:
    """Writes P' into ``out``: ``prompt.safetensors`` and the PEFT adapter folder.

    Every rank runs the model's export methods inside :func:`gathered` (under ZeRO-3 computing
    P' is collective), each into its own temporary path; rank 0 then moves its files into place.
    """
    paths = {"prompt": os.path.join(out, PROMPT_FILE), "peft": os.path.join(out, PEFT_DIR)}
    tmp = {key: f"{path}.tmp-rank{info.rank}" for key, path in paths.items()}
    was_training = model.training
    model.eval()
    try:
        with gathered(model):
            model.save_prompt(tmp["prompt"])
            model.export_peft(tmp["peft"])
    finally:
        model.train(was_training)
    barrier(info)
    if info.is_main:
        os.replace(tmp["prompt"], paths["prompt"])
        shutil.rmtree(paths["peft"], ignore_errors=True)
        os.replace(tmp["peft"], paths["peft"])
    else:
        os.remove(tmp["prompt"])
        shutil.rmtree(tmp["peft"])
    barrier(info)
    return paths
