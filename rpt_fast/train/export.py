"""Moves the small trainable state (P and the MLP) in and out of the model, gathered whole under
ZeRO-3, and writes the final exports: P' as safetensors and as a PEFT prompt-tuning adapter
that names its base model and carries a short model card (README.md)."""

from __future__ import annotations

import contextlib
import json
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


def make_public(path: str) -> None:
    """Gives ``path`` (a file, or every file under a folder) the permissions of any file this
    process creates (0644 under the usual umask): safetensors writes 0600."""
    umask = os.umask(0)
    os.umask(umask)
    files = [path] if os.path.isfile(path) else [
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
    for file in files:
        os.chmod(file, 0o666 & ~umask)


def finish_adapter(folder: str, base_model: str | None, card: str | None) -> None:
    """Names ``base_model`` in the adapter's config (PEFT reads ``base_model_name_or_path``)
    and writes the model card ``README.md``."""
    if base_model is not None:
        path = os.path.join(folder, "adapter_config.json")
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
        config["base_model_name_or_path"] = base_model
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
    if card is not None:
        with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(card)


def export_prompt(model, out: str, info: DistInfo, *, base_model: str | None = None,
                  card=None) -> dict[str, str]:
    """Writes P' into ``out``: ``prompt.safetensors`` and the PEFT adapter folder naming
    ``base_model``, with the model card ``card(adapter_folder)`` (both optional).

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
        finish_adapter(tmp["peft"], base_model, None if card is None else card(paths["peft"]))
        for key in paths:
            make_public(tmp[key])
        os.replace(tmp["prompt"], paths["prompt"])
        shutil.rmtree(paths["peft"], ignore_errors=True)
        os.replace(tmp["peft"], paths["peft"])
    else:
        os.remove(tmp["prompt"])
        shutil.rmtree(tmp["peft"])
    barrier(info)
    return paths
