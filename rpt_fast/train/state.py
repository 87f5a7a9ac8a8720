"""What a checkpoint holds and how it is restored: the trainable parameters and optimizer
(DeepSpeed's engine checkpoint without the frozen backbone, or plain torch state), the LR
schedule, every rank's RNG states, the step and the best result so far.

Everything needed for a resumed run to continue bit for bit on the same data: the data order
is a function of ``(seed, step)`` (see :mod:`data`), the rest is here.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import checkpoint
from .distributed import DistInfo, all_gather_objects, barrier, broadcast_object
from .export import make_public
from .rank_errors import failure_on_any_rank, on_every_rank

TRAINER_STATE = "trainer_state.json"
BEST = "best_trainable.safetensors"
PLAIN_STATE = "plain_state.pt"
ENGINE_TAG = "deepspeed"


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _rng_file(rank: int) -> str:
    return f"rng_rank{rank:05d}.pt"


def save(root: str, step: int, info: DistInfo, *, trainer_state: dict, best: dict | None,
         engine=None, model=None, optimizer=None, scheduler=None, keep: int = 1) -> str | None:
    """Collective: every rank calls it. Returns the sealed folder on rank 0 (None elsewhere);
    the ``keep`` newest checkpoints stay."""
    tmp = checkpoint.begin(root, step) if info.is_main else None
    tmp = broadcast_object(info, tmp)
    barrier(info)
    if engine is not None:
        engine.save_checkpoint(tmp, tag=ENGINE_TAG, save_latest=False, exclude_frozen_parameters=True)
    elif info.is_main:
        torch.save(
            {
                "trainable": model.prompt_encoder.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
            os.path.join(tmp, PLAIN_STATE),
        )
    torch.save(rng_state(), os.path.join(tmp, _rng_file(info.rank)))
    if info.is_main:
        if best is not None:
            save_file(best["tensors"], os.path.join(tmp, BEST))
            make_public(os.path.join(tmp, BEST))
        public = {**trainer_state, "best": None if best is None else {k: v for k, v in best.items() if k != "tensors"}}
        with open(os.path.join(tmp, TRAINER_STATE), "w", encoding="utf-8") as handle:
            json.dump(public, handle, indent=1)
    barrier(info)
    files: dict = {}
    for part in all_gather_objects(info, checkpoint.describe(tmp, info.rank)):
        files.update(part)  # every rank hashes its own files: rank 0's listing may be stale (NFS)
    folder = checkpoint.seal(root, tmp, step, files, keep=keep) if info.is_main else None
    barrier(info)
    return folder


def find_resumable(root: str, info: DistInfo) -> str | None:
    """The verified latest checkpoint (rank 0 checks, every rank gets the answer or the error)."""
    result = None
    if info.is_main:
        try:
            result = ("ok", checkpoint.latest(root))
        except checkpoint.CheckpointError as exc:
            result = ("error", str(exc))
    kind, value = broadcast_object(info, result)
    if kind == "error":
        raise on_every_rank(checkpoint.CheckpointError(value))
    return value


def fingerprint_changes(saved: dict, now: dict) -> dict:
    """``{setting: (saved, now)}`` for the settings a resumed run changed; a setting the saved
    fingerprint lacks did not exist in the rpt-fast version that wrote it, so it is no change."""
    return {k: (saved[k], v) for k, v in now.items() if k in saved and saved[k] != v}


def load(folder: str, info: DistInfo, *, fingerprint: dict, engine=None, model=None, optimizer=None,
         scheduler=None) -> tuple[dict, dict | None]:
    """Restores a verified checkpoint into the built run; returns ``(trainer_state, best)``."""
    with open(os.path.join(folder, TRAINER_STATE), encoding="utf-8") as handle:
        trainer_state = json.load(handle)
    changed = fingerprint_changes(trainer_state["fingerprint"], fingerprint)
    detail = ", ".join(f"{k} was {old!r}, now {new!r}" for k, (old, new) in changed.items())
    refused = failure_on_any_rank(info, f"cannot resume from {folder}: the run changed ({detail})" if changed else None)
    if refused is not None:
        raise on_every_rank(checkpoint.CheckpointError(refused))
    if engine is not None:
        path, _ = engine.load_checkpoint(
            folder, tag=ENGINE_TAG, load_module_strict=False, load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise checkpoint.CheckpointError(f"DeepSpeed could not load the engine state from {folder}/{ENGINE_TAG}")
    else:
        plain = torch.load(os.path.join(folder, PLAIN_STATE), map_location="cpu", weights_only=True)
        model.prompt_encoder.load_state_dict(plain["trainable"])
        optimizer.load_state_dict(plain["optimizer"])
        scheduler.load_state_dict(plain["scheduler"])
    rng_path = os.path.join(folder, _rng_file(info.rank))
    set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=True))
    best = None
    if trainer_state.get("best") is not None:
        best = {**trainer_state["best"], "tensors": load_file(os.path.join(folder, BEST))}
    return trainer_state, best
