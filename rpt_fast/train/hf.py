"""Training a :class:`~rpt_fast.prompt.ResidualPromptModel` with ``transformers.Trainer``.

A stock ``Trainer`` saves a plain module's whole ``state_dict()``: the frozen backbone (GBs, and
T5's tied embeddings make safetensors refuse it) next to the few trainable tensors. The
:class:`PromptTrainer` below saves and reloads only what trains (P and the MLP, ``model.
safetensors`` in each ``checkpoint-N``), with or without ``TrainingArguments(deepspeed=...)``;
optimizer, scheduler and RNG states are the Trainer's own. :func:`prompt_dataset` tokenizes examples
as ``rpt-train`` does (for decoder-only models: input and target in one causal sequence).
"""

from __future__ import annotations

import os

from transformers import Trainer

from .data import encode_examples
from .export import make_public


def prompt_dataset(examples, tokenizer, model, *, max_input_length: int = 256, max_target_length: int = 16,
                   chat_template: bool = False) -> list[dict]:
    """``examples`` (:class:`~rpt_fast.train.tasks.Example`) as ``Trainer`` features, tokenized
    as ``rpt-train`` tokenizes them for ``model`` (a ResidualPromptModel; see
    :func:`~rpt_fast.train.data.encode_examples`): T5 ``input`` -> ``target``; decoder-only one
    causal sequence with the loss on the target only (``chat_template``: the tokenizer's).
    ``transformers.DataCollatorForSeq2Seq(tokenizer)`` pads them, on either side (the model's
    position ids skip left padding)."""
    encoded = encode_examples(examples, tokenizer, encoder_decoder=model.is_encoder_decoder,
                              max_input_length=max_input_length, max_target_length=max_target_length,
                              chat_template=chat_template)
    return [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels} for e in encoded]


def trainable_state_dict(model, state_dict: dict | None = None) -> dict:
    """The entries of ``state_dict`` (default: the model's) that belong to trainable parameters."""
    names = {name for name, param in model.named_parameters() if param.requires_grad}
    state_dict = model.state_dict() if state_dict is None else state_dict
    return {key: value.detach().contiguous() for key, value in state_dict.items() if key in names}


class PromptTrainer(Trainer):
    """``transformers.Trainer`` whose checkpoints hold the trainable prompt encoder only."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        import safetensors.torch
        import torch
        from transformers.trainer import SAFE_WEIGHTS_NAME, TRAINING_ARGS_NAME

        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        path = os.path.join(output_dir, SAFE_WEIGHTS_NAME)
        safetensors.torch.save_file(trainable_state_dict(model, state_dict), path, metadata={"format": "pt"})
        make_public(path)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _issue_warnings_after_load(self, load_result) -> None:
        """The frozen backbone is never in a checkpoint; a missing trainable tensor is an error."""
        names = {name for name, param in self.model.named_parameters() if param.requires_grad}
        missing = sorted(set(load_result.missing_keys) & names)
        if missing or load_result.unexpected_keys:
            raise RuntimeError(
                f"checkpoint does not match the prompt encoder: missing {missing}, "
                f"unexpected {sorted(load_result.unexpected_keys)}"
            )
