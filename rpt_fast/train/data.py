"""Tokenized examples, the seeded epoch order and the per-rank batches.

The order of epoch ``e`` depends only on ``(seed, e)`` and global step ``s`` is batch
``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``: a resumed run needs nothing but the
step to continue on the very same data. Each global batch is cut into equal contiguous
per-rank slices (with gradient accumulation: into equal micro-batches first, each cut into
per-rank slices); every rank also knows the whole batch's label-token count, so the loss can be
normalized by the global count without communication.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: model inputs, training labels (aligned with ``input_ids`` for
    decoder-only models) and the inputs alone for generation."""

    input_ids: list[int]
    labels: list[int]
    prompt_ids: list[int]
    num_label_tokens: int


def encode_examples(examples, tokenizer, *, encoder_decoder: bool, max_input_length: int,
                    max_target_length: int) -> list[Encoded]:
    """T5: ``input + eos`` -> ``target + eos``. Decoder-only: ``input + target + eos`` with the
    loss on the target part only. Inputs and targets are cut at the end to their max lengths
    (eos included)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer: has no eos_token_id, needed to end targets")
    out = []
    for example in examples:
        source = tokenizer(example.input, add_special_tokens=False)["input_ids"][: max_input_length - 1]
        target = tokenizer(example.target, add_special_tokens=False)["input_ids"][: max_target_length - 1]
        target = target + [eos]
        if encoder_decoder:
            source = source + [eos]
            out.append(Encoded(source, target, source, len(target)))
        else:
            if not source:
                source = [eos]  # the first token is never a label: keep the target's first one
            ids = source + target
            labels = [IGNORE_INDEX] * len(source) + target
            out.append(Encoded(ids, labels, source, len(target)))
    return out


def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator)


class StepSampler:
    """Maps a global step to this rank's example indices (and the whole batch's)."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, rank: int, world_size: int,
                 accumulation: int = 1):
        if batch_size % (world_size * accumulation):
            raise ValueError(
                f"batch_size: {batch_size} does not split evenly over {world_size} ranks x "
                f"{accumulation} accumulation steps"
            )
        if num_examples < batch_size:
            raise ValueError(
                f"the training set has {num_examples} examples, fewer than one batch of {batch_size}"
            )
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.rank, self.world_size, self.accumulation = rank, world_size, accumulation
        self.steps_per_epoch = num_examples // batch_size  # the last partial batch is dropped
        self._cached_epoch, self._cached_order = None, None

    def global_batch(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._cached_epoch:
            self._cached_epoch, self._cached_order = epoch, epoch_order(self.num_examples, self.seed, epoch)
        start = position * self.batch_size
        return self._cached_order[start : start + self.batch_size].tolist()

    def rank_batch(self, step: int, micro: int = 0) -> list[int]:
        """This rank's slice of micro-batch ``micro`` (of ``accumulation``) of the global batch."""
        per_micro = self.batch_size // self.accumulation
        per_rank = per_micro // self.world_size
        start = micro * per_micro + self.rank * per_rank
        return self.global_batch(step)[start : start + per_rank]


def _pad(rows: list[list[int]], value: int, *, left: bool = False) -> torch.Tensor:
    width = max(len(row) for row in rows)
    padded = [([value] * (width - len(r)) + r) if left else (r + [value] * (width - len(r))) for r in rows]
    return torch.tensor(padded, dtype=torch.long)


def collate_train(encoded: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    input_ids = _pad([e.input_ids for e in encoded], pad_id)
    mask = _pad([[1] * len(e.input_ids) for e in encoded], 0)
    labels = _pad([e.labels for e in encoded], IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def collate_generate(encoded: list[Encoded], pad_id: int, *, encoder_decoder: bool) -> dict[str, torch.Tensor]:
    """Generation inputs; decoder-only ones are left-padded so new tokens follow directly."""
    left = not encoder_decoder
    input_ids = _pad([e.prompt_ids for e in encoded], pad_id, left=left)
    mask = _pad([[1] * len(e.prompt_ids) for e in encoded], 0, left=left)
    return {"input_ids": input_ids, "attention_mask": mask}


def eval_shard(num_examples: int, rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s eval indices, strided and padded (by repeating its last one) so every
    rank runs the same number of batches, as ZeRO-3's collective gathers require."""
    indices = list(range(rank, num_examples, world_size))
    per_rank = -(-num_examples // world_size)
    while len(indices) < per_rank:
        indices.append(indices[-1] if indices else 0)
    return indices
