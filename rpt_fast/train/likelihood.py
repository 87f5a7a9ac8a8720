"""Classification by likelihood (``--eval-mode likelihood``): each eval example's prediction is
the label string the model gives the highest log-likelihood, one teacher-forced forward per
candidate label instead of a token-by-token ``generate`` (which under ZeRO-3 gathers the whole
decoder once per generated token).

The candidates are the distinct targets of the training set: tasks with a fixed label set
(BoolQ, CB, COPA, RTE, WiC, MultiRC, the synthetic task) qualify; tasks whose target is free
text (WSC's referent, ReCoRD's entity) are refused.
"""

from __future__ import annotations

import torch

from .data import IGNORE_INDEX, collate_train, encode_examples

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


def _sequence_logprob(logits: torch.Tensor, labels: torch.Tensor, encoder_decoder: bool, num_tokens: int):
    """Sum over each row of log p(label token): T5 logits align with the labels; a decoder-only
    model's logits have the prompt's positions first and predict the next token."""
    if not encoder_decoder:
        logits = logits[:, num_tokens:-1]
        labels = labels[:, 1:]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    mask = labels != IGNORE_INDEX
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1)


@torch.no_grad()
def predict(model, examples, labels: list[str], tokenizer, device, *, max_input_length: int,
            max_target_length: int, autocast_dtype) -> list[str]:
    """The likeliest of ``labels`` for each of ``examples`` (one forward per label)."""
    from .tasks import Example

    encoder_decoder = model.is_encoder_decoder
    scores = []
    for label in labels:
        encoded = encode_examples([Example(e.input, label) for e in examples], tokenizer,
                                  encoder_decoder=encoder_decoder, max_input_length=max_input_length,
                                  max_target_length=max_target_length)
        batch = {k: v.to(device) for k, v in collate_train(encoded, tokenizer.pad_token_id).items()}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(**batch).logits
        scores.append(_sequence_logprob(logits, batch["labels"], encoder_decoder, model.num_tokens))
    best = torch.stack(scores, dim=1).argmax(dim=1).tolist()
    return [labels[i] for i in best]
