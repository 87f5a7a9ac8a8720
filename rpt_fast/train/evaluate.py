"""Evaluation by greedy generation (with the KV cache, whatever the training's ``use_cache``) or
by label likelihood (:mod:`likelihood`): each rank predicts its shard of the eval set, rank 0
puts the predictions back in order and scores them with the task's metrics (every rank gets the
scores).

Generation continues the encoded source (decoder-only: left-padded, P' first, so P' and the
source fill the KV cache once) and a prediction is the text of the new tokens before the first
EOS.
"""

from __future__ import annotations

import torch

from . import likelihood
from .data import Encoded, collate_generate, eval_shard
from .distributed import DistInfo, all_gather_objects, broadcast_object


def generation_length(task, train: list[Encoded], *, encoder_decoder: bool, max_target_length: int) -> int:
    """New tokens to generate when ``--max-new-tokens`` is not given. T5: the task's official
    length (counted in T5's tokens), else ``max_target_length``. Decoder-only: the longest
    training target in the model's own tokens (EOS not counted), at least 1."""
    if encoder_decoder:
        return task.max_new_tokens or max_target_length
    return max(1, max((e.num_label_tokens - 1 for e in train), default=1))


def _until_eos(rows: torch.Tensor, eos: int) -> list[list[int]]:
    """Each row's ids before its first ``eos`` (generation stops a row there; the rest is padding)."""
    return [row[: row.index(eos)] if eos in row else row for row in rows.tolist()]


@torch.no_grad()
def evaluate(model, task, encoded: list[Encoded], tokenizer, info: DistInfo, *, batch_size: int,
             max_new_tokens: int, synced_gpus: bool, autocast_dtype: torch.dtype | None,
             examples=None, mode: str = "generate", max_input_length: int | None = None,
             chat_template: bool = False) -> dict[str, float]:
    """Scores ``model`` on ``examples`` (default ``task.eval``), encoded as ``encoded``;
    ``batch_size`` is the global eval batch. ``synced_gpus`` keeps ZeRO-3 ranks generating in
    lockstep (their parameter gathers are collective). ``mode="likelihood"`` picks the likeliest
    training label instead of generating (examples encoded again with ``max_input_length``
    and ``chat_template``, as ``encoded`` was)."""
    labels = likelihood.candidate_labels(task) if mode == "likelihood" else None
    examples = list(task.eval if examples is None else examples)
    was_training = model.training
    model.eval()
    indices = eval_shard(len(encoded), info.rank, info.world_size)
    per_rank = max(1, batch_size // info.world_size)
    pad_id = tokenizer.pad_token_id
    predictions: dict[int, str] = {}
    try:
        for start in range(0, len(indices), per_rank):
            chunk = indices[start : start + per_rank]
            if labels is not None:
                texts = likelihood.predict(model, [examples[i] for i in chunk], labels, tokenizer, info.device,
                                           max_input_length=max_input_length, max_target_length=max_new_tokens,
                                           autocast_dtype=autocast_dtype, chat_template=chat_template)
                predictions.update(zip(chunk, texts))
                continue
            batch = collate_generate([encoded[i] for i in chunk], pad_id, encoder_decoder=model.is_encoder_decoder)
            batch = {k: v.to(info.device) for k, v in batch.items()}
            with torch.autocast(info.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    synced_gpus=synced_gpus,
                    use_cache=True,  # the backbone's config may say False (gradient checkpointing)
                    pad_token_id=pad_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            texts = tokenizer.batch_decode(_until_eos(output, tokenizer.eos_token_id), skip_special_tokens=True)
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
        scores = {k: float(v) for k, v in task.metrics(ordered, examples).items()}
    return broadcast_object(info, scores)
