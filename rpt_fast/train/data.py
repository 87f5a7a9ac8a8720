"""Tokenized examples (T5: source -> target; decoder-only: one causal sequence laid out by
:class:`CausalLayout`, the loss on the target), the seeded epoch order and the per-rank batches.

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


CAUSAL_SEPARATOR = "\n"  # between a decoder-only model's input and its target (no chat template)
_SENTINEL = "<<rpt-fast-input>>"  # stands for the input while a chat template is rendered


@dataclass(frozen=True)
class CausalLayout:
    """The token ids around a decoder-only model's input: ``prefix + input + suffix`` is the
    source (what generation continues), the target follows it. Without a chat template the
    prefix is the tokenizer's BOS where its own encoding starts with one (Llama, Mistral; not
    GPT-2, Qwen2, ByT5) and the suffix :data:`CAUSAL_SEPARATOR`; with one, they are what the
    template puts before and after a user message, the assistant's header included."""

    prefix: list[int]
    suffix: list[int]


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def causal_layout(tokenizer, chat_template: bool = False) -> CausalLayout:
    """The layout of :class:`CausalLayout`; ValueError naming ``chat_template`` when the
    tokenizer has none, or one that does not show the user's message verbatim."""
    if not chat_template:
        bos = tokenizer.bos_token_id
        adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [bos]
        return CausalLayout([bos] if adds_bos else [], _ids(tokenizer, CAUSAL_SEPARATOR))
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"chat_template: the tokenizer ({type(tokenizer).__name__}, {tokenizer.name_or_path or 'built in'}) "
            "has no chat template; give --tokenizer a tokenizer folder whose tokenizer_config.json or "
            "chat_template.jinja has one, or leave out --chat-template"
        )
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                         add_generation_prompt=True)
    if text.count(_SENTINEL) != 1:
        raise ValueError("chat_template: the tokenizer's template does not render a user message verbatim "
                         f"(a test message came out as {text!r})")
    before, after = text.split(_SENTINEL)
    return CausalLayout(_ids(tokenizer, before), _ids(tokenizer, after))


def target_ids(tokenizer, text: str, max_target_length: int) -> list[int]:
    """``text``'s tokens cut to ``max_target_length - 1``, then EOS."""
    return _ids(tokenizer, text)[: max_target_length - 1] + [tokenizer.eos_token_id]


def encode_examples(examples, tokenizer, *, encoder_decoder: bool, max_input_length: int,
                    max_target_length: int, chat_template: bool = False) -> list[Encoded]:
    """T5: ``input + eos`` -> ``target + eos``. Decoder-only: one causal sequence ``prefix +
    input + suffix + target + eos`` (:class:`CausalLayout`; ``chat_template``: the tokenizer's)
    with the loss on the target and its EOS only. The input is cut at its end so that the source
    (T5: with its EOS; decoder-only: with prefix and suffix) has at most ``max_input_length``
    tokens; the target is cut to ``max_target_length`` tokens, EOS included."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: has no eos_token_id, needed to end targets")
    if encoder_decoder:
        if chat_template:
            raise ValueError("chat_template: chat templates format decoder-only models' inputs; this model is "
                             "an encoder-decoder (T5)")
        out = []
        for example in examples:
            source = _ids(tokenizer, example.input)[: max_input_length - 1] + [tokenizer.eos_token_id]
            target = target_ids(tokenizer, example.target, max_target_length)
            out.append(Encoded(source, target, source, len(target)))
        return out
    layout = causal_layout(tokenizer, chat_template)
    room = max_input_length - len(layout.prefix) - len(layout.suffix)
    if room < 1:
        raise ValueError(f"max_input_length: {max_input_length} tokens leave no room for the input beside the "
                         f"{len(layout.prefix) + len(layout.suffix)} tokens of the "
                         f"{'chat template' if chat_template else 'BOS and separator'}")
    out = []
    for example in examples:
        source = layout.prefix + _ids(tokenizer, example.input)[:room] + layout.suffix
        target = target_ids(tokenizer, example.target, max_target_length)
        out.append(Encoded(source + target, [IGNORE_INDEX] * len(source) + target, source, len(target)))
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


def pad_rows(rows: list[list[int]], value: int, *, left: bool = False) -> torch.Tensor:
    width = max(len(row) for row in rows)
    padded = [([value] * (width - len(r)) + r) if left else (r + [value] * (width - len(r))) for r in rows]
    return torch.tensor(padded, dtype=torch.long)


def collate_train(encoded: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    input_ids = pad_rows([e.input_ids for e in encoded], pad_id)
    mask = pad_rows([[1] * len(e.input_ids) for e in encoded], 0)
    labels = pad_rows([e.labels for e in encoded], IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def collate_generate(encoded: list[Encoded], pad_id: int, *, encoder_decoder: bool) -> dict[str, torch.Tensor]:
    """Generation inputs; decoder-only ones are left-padded so new tokens follow directly."""
    left = not encoder_decoder
    input_ids = pad_rows([e.prompt_ids for e in encoded], pad_id, left=left)
    mask = pad_rows([[1] * len(e.prompt_ids) for e in encoded], 0, left=left)
    return {"input_ids": input_ids, "attention_mask": mask}


def eval_shard(num_examples: int, rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s eval indices, strided and padded (by repeating its last one) so every
    rank runs the same number of batches, as ZeRO-3's collective gathers require."""
    indices = list(range(rank, num_examples, world_size))
    per_rank = -(-num_examples // world_size)
    while len(indices) < per_rank:
        indices.append(indices[-1] if indices else 0)
    return indices
