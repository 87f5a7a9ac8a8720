"""Classification by likelihood (``--eval-mode likelihood``): each eval example's prediction is
the label string the model gives the highest log-likelihood (of its tokens and EOS), instead of
a token-by-token ``generate`` (which under ZeRO-3 gathers the whole model once per generated
token).

T5: one teacher-forced forward per candidate label. Decoder-only: one forward over P' and the
sources fills the KV cache, then one forward scores every candidate's tokens from that cache
(two forwards per batch, whatever the number of labels, and the source is computed once).

The candidates are the distinct targets of the training set: tasks with a fixed label set
(BoolQ, CB, COPA, RTE, WiC, MultiRC, the synthetic task) qualify; tasks whose target is free
text (WSC's referent, ReCoRD's entity) are refused.
"""

from __future__ import annotations

import inspect

import torch

from .data import IGNORE_INDEX, collate_generate, collate_train, encode_examples, pad_rows, target_ids

MAX_CANDIDATES = 16


def candidate_labels(task) -> list[str]:
    """The training set's distinct targets; ValueError when they are not a small label set
    covering the eval targets."""
    labels = sorted({example.target for example in task.train})
    if len(labels) > MAX_CANDIDATES:
        raise ValueError(
            f"eval_mode: likelihood scoring needs a fixed label set, but task {task.name!r} has "
            f"{len(labels)} distinct training targets (at most {MAX_CANDIDATES}); use --eval-mode generate"
        )
    unseen = sorted({example.target for example in task.eval} - set(labels))
    if unseen:
        raise ValueError(
            f"eval_mode: likelihood scoring picks among the training labels {labels}, but the eval set "
            f"of task {task.name!r} has other targets ({unseen[:3]}); use --eval-mode generate"
        )
    return labels


def _t5_scores(model, examples, labels, tokenizer, device, lengths: dict, autocast) -> torch.Tensor:
    from .tasks import Example

    scores = []
    for label in labels:
        encoded = encode_examples([Example(e.input, label) for e in examples], tokenizer, encoder_decoder=True,
                                  **lengths)
        batch = {k: v.to(device) for k, v in collate_train(encoded, tokenizer.pad_token_id).items()}
        with autocast:
            logits = model(**batch).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        target = batch["labels"]
        picked = logprobs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        scores.append((picked * (target != IGNORE_INDEX)).sum(dim=1))
    return torch.stack(scores, dim=1)


def _causal_scores(model, examples, labels, tokenizer, device, lengths: dict, chat_template: bool,
                   autocast) -> torch.Tensor:
    """Log-likelihoods (batch, labels) from P' + source once (left-padded, its KV cache
    repeated per label) and every label's tokens continuing it."""
    from .tasks import Example

    encoded = encode_examples([Example(e.input, "") for e in examples], tokenizer, encoder_decoder=False,
                              chat_template=chat_template, **lengths)
    sources = {k: v.to(device) for k, v in
               collate_generate(encoded, tokenizer.pad_token_id, encoder_decoder=False).items()}
    candidates = [target_ids(tokenizer, label, lengths["max_target_length"]) for label in labels]
    ids = pad_rows(candidates, tokenizer.pad_token_id).to(device)  # (labels, T)
    mask = pad_rows([[1] * len(c) for c in candidates], 0).to(device)
    batch, num_labels = sources["input_ids"].shape[0], len(labels)
    with autocast:
        prefix = model(**sources, use_cache=True)
    # The last source position predicts each label's first token.
    first = torch.log_softmax(prefix.logits[:, -1].float(), dim=-1)[:, ids[:, 0]]  # (batch, labels)
    if ids.shape[1] == 1:
        return first
    # transformers >= 5.2x names the KV cache "cache" (output and argument), older "past_key_values"
    cache = prefix.cache if getattr(prefix, "cache", None) is not None else prefix.past_key_values
    cache.batch_repeat_interleave(num_labels)  # row b * num_labels + k continues with label k
    cache_arg = "cache" if "cache" in inspect.signature(model.backbone.forward).parameters else "past_key_values"
    prefix_mask = torch.cat((sources["attention_mask"].new_ones(batch, model.num_tokens),
                             sources["attention_mask"]), dim=1)
    steps = ids.shape[1] - 1
    rest_mask = mask[:, :-1].repeat(batch, 1)
    positions = prefix_mask.sum(-1).repeat_interleave(num_labels).unsqueeze(1) + torch.arange(steps, device=device)
    with autocast:
        logits = model.backbone(input_ids=ids[:, :-1].repeat(batch, 1), **{cache_arg: cache},
                                attention_mask=torch.cat((prefix_mask.repeat_interleave(num_labels, 0), rest_mask), 1),
                                position_ids=positions, use_cache=True).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, ids[:, 1:].repeat(batch, 1).unsqueeze(-1)).squeeze(-1)
    rest = (picked * mask[:, 1:].repeat(batch, 1)).sum(dim=1).view(batch, num_labels)
    return first + rest


@torch.no_grad()
def scores(model, examples, labels: list[str], tokenizer, device, *, max_input_length: int,
           max_target_length: int, autocast_dtype, chat_template: bool = False) -> torch.Tensor:
    """(len(examples), len(labels)) float32: log p(label tokens + EOS | P', input), the
    examples encoded as for training (``chat_template``: decoder-only, the tokenizer's)."""
    lengths = {"max_input_length": max_input_length, "max_target_length": max_target_length}
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    if model.is_encoder_decoder:
        return _t5_scores(model, examples, labels, tokenizer, device, lengths, autocast)
    return _causal_scores(model, examples, labels, tokenizer, device, lengths, chat_template, autocast)


def predict(model, examples, labels: list[str], tokenizer, device, **kwargs) -> list[str]:
    """The likeliest of ``labels`` for each of ``examples`` (keyword arguments: :func:`scores`)."""
    best = scores(model, examples, labels, tokenizer, device, **kwargs).argmax(dim=1).tolist()
    return [labels[i] for i in best]
