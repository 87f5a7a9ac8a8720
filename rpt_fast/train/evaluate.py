"""Evaluation by greedy generation: each rank decodes its shard of the eval set, rank 0 puts the
predictions back in order and scores them with the task's metrics (every rank gets the scores)."""

from __future__ import annotations

import torch

from .data import Encoded, collate_generate, eval_shard
from .distributed import DistInfo, all_gather_objects, broadcast_object


@torch.no_grad()
def evaluate(model, task, encoded: list[Encoded], tokenizer, info: DistInfo, *, batch_size: int,
             max_new_tokens: int, synced_gpus: bool, autocast_dtype: torch.dtype | None,
             examples=None) -> dict[str, float]:
    """Scores ``model`` on ``examples`` (default ``task.eval``), encoded as ``encoded``;
    ``batch_size`` is the global eval batch. ``synced_gpus`` keeps ZeRO-3 ranks generating in
    lockstep (their parameter gathers are collective)."""
    was_training = model.training
    model.eval()
    indices = eval_shard(len(encoded), info.rank, info.world_size)
    per_rank = max(1, batch_size // info.world_size)
    pad_id = tokenizer.pad_token_id
    predictions: dict[int, str] = {}
    try:
        for start in range(0, len(indices), per_rank):
            chunk = indices[start : start + per_rank]
            batch = collate_generate([encoded[i] for i in chunk], pad_id, encoder_decoder=model.is_encoder_decoder)
            batch = {k: v.to(info.device) for k, v in batch.items()}
            with torch.autocast(info.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    synced_gpus=synced_gpus,
                    pad_token_id=pad_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            texts = tokenizer.batch_decode(output, skip_special_tokens=True)
            for index, text in zip(chunk, texts):
                predictions[index] = text
    finally:
        model.train(was_training)
    parts = all_gather_objects(info, predictions)
    scores = None
    if info.is_main:
        merged: dict[int, str] = {}
        for part in parts:
            merged.update(part)
        ordered = [merged[i] for i in range(len(encoded))]
        scores = {k: float(v) for k, v in task.metrics(ordered, list(task.eval if examples is None else examples)).items()}
    return broadcast_object(info, scores)
