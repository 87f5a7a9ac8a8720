"""Evaluation: generation keeps the KV cache on under gradient checkpointing, and likelihood
scoring picks the label a per-candidate loss computation would pick (T5 and decoder-only)."""

import pytest
import torch
from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel

from rpt_fast.prompt import ResidualPromptModel
from rpt_fast.train import likelihood
from rpt_fast.train.backbone import model_config
from rpt_fast.train.config import TrainConfig
from rpt_fast.train.data import encode_examples
from rpt_fast.train.distributed import DistInfo
from rpt_fast.train.evaluate import evaluate
from rpt_fast.train.tasks import Example, Task

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
TOKENIZER = ByT5Tokenizer()


def _task():
    train = [Example(f"sample {i}", "yes" if i % 2 else "no") for i in range(8)]
    evals = [Example(f"probe {i} words", "no" if i % 3 else "yes") for i in range(5)]
    return Task("synthetic", train, evals, "accuracy")


def _t5(gradient_checkpointing: bool):
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(0)
    config = model_config(TrainConfig(gradient_checkpointing=gradient_checkpointing))
    backbone = T5ForConditionalGeneration(config).double()
    if gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return ResidualPromptModel(backbone, 3, 5, init="random", backend="eager", seed=0)


def test_generation_uses_the_kv_cache_even_when_training_turned_it_off():
    model = _t5(gradient_checkpointing=True)
    assert model.backbone.config.use_cache is False  # what checkpointing sets for training
    lengths = []
    model.backbone.decoder.register_forward_pre_hook(
        lambda _m, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    task = _task()
    encoded = encode_examples(task.eval, TOKENIZER, encoder_decoder=True, max_input_length=32, max_target_length=6)
    evaluate(model, task, encoded, TOKENIZER, CPU, batch_size=8, max_new_tokens=6, synced_gpus=False,
             autocast_dtype=None)
    assert len(lengths) > 2 and set(lengths) == {1}  # one new token per step: the cache is used


def _manual_choice(model, example, labels, encoder_decoder):
    """The label with the highest summed log-likelihood, from the backbone's own mean loss."""
    best, best_score = None, -float("inf")
    for label in labels:
        enc = encode_examples([Example(example.input, label)], TOKENIZER, encoder_decoder=encoder_decoder,
                              max_input_length=32, max_target_length=6)[0]
        ids = torch.tensor([enc.input_ids])
        out = model(ids, torch.ones_like(ids), labels=torch.tensor([enc.labels]))
        score = -out.loss.item() * enc.num_label_tokens
        if score > best_score:
            best, best_score = label, score
    return best


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_likelihood_picks_the_label_with_the_highest_sequence_likelihood(kind):
    if kind == "t5":
        model = _t5(gradient_checkpointing=False)
    else:
        torch.manual_seed(0)
        backbone = GPT2LMHeadModel(GPT2Config(vocab_size=384, n_embd=16, n_layer=1, n_head=2, n_positions=64)).double()
        model = ResidualPromptModel(backbone, 3, 5, init="random", backend="eager", seed=0)
    model.eval()
    task = _task()
    labels = likelihood.candidate_labels(task)
    assert labels == ["no", "yes"]
    got = likelihood.predict(model, task.eval, labels, TOKENIZER, CPU.device, max_input_length=32,
                             max_target_length=6, autocast_dtype=None)
    expected = [_manual_choice(model, e, labels, model.is_encoder_decoder) for e in task.eval]
    assert got == expected
    encoded = encode_examples(task.eval, TOKENIZER, encoder_decoder=model.is_encoder_decoder, max_input_length=32,
                              max_target_length=6)
    scores = evaluate(model, task, encoded, TOKENIZER, CPU, batch_size=2, max_new_tokens=6, synced_gpus=False,
                      autocast_dtype=None, mode="likelihood", max_input_length=32)
    assert scores == task.metrics(expected, task.eval)


def test_likelihood_needs_a_fixed_label_set():
    free_text = Task("wsc", [Example(str(i), f"referent {i}") for i in range(20)], [], "accuracy")
    with pytest.raises(ValueError, match="eval_mode: likelihood scoring needs a fixed label set.*20 distinct"):
        likelihood.candidate_labels(free_text)
    unseen = Task("cb", [Example("a", "neutral")], [Example("b", "entailment")], "accuracy")
    with pytest.raises(ValueError, match=r"other targets \(\['entailment'\]\)"):
        likelihood.candidate_labels(unseen)
