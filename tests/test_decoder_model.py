"""ResidualPromptModel on decoder-only backbones (the tiny-llama preset, a Qwen2 with q/k/v biases,
a Llama with a tied head), in float64 unless the dtype is the point: logits independent of the
padding side; batched left-padded greedy generation equal to one example at a time and to the
argmax of the forward, with P' and the source in the KV cache; evaluation decoding only the new
tokens up to EOS; cached likelihood scores equal to whole-sequence ones; the PEFT CAUSAL_LM
adapter reloaded by stock PEFT giving the model's logits (with the MLP) per dtype."""

import os
import sys

import pytest
import torch
from transformers import ByT5Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import decoder_models  # noqa: E402

from rpt_fast.presets import build_backbone  # noqa: E402
from rpt_fast.prompt import ResidualPromptModel  # noqa: E402
from rpt_fast.train import likelihood  # noqa: E402
from rpt_fast.train.data import encode_examples  # noqa: E402
from rpt_fast.train.distributed import DistInfo  # noqa: E402
from rpt_fast.train.evaluate import evaluate  # noqa: E402
from rpt_fast.train.tasks import Example, Task  # noqa: E402

peft = pytest.importorskip("peft")

N = 4  # prompt tokens
CPU = DistInfo(0, 1, 0, torch.device("cpu"))
BYT5 = ByT5Tokenizer()
KINDS = ("tiny-llama", "qwen2", "tied-llama")


def backbone(kind, dtype):
    if kind == "tiny-llama":
        return build_backbone("tiny-llama", seed=0).to(dtype)
    return {"qwen2": decoder_models.qwen2, "tied-llama": decoder_models.tied_llama}[kind](dtype=dtype)


def prompt_model(kind, dtype=torch.float64):
    model = ResidualPromptModel(backbone(kind, dtype), N, 16, seed=1, backend="eager").eval()
    with torch.no_grad():  # fresh, non-trivial MLP parameters, as after some training
        for param in model.prompt_encoder.mlp.parameters():
            param.uniform_(-0.5, 0.5)
    return model


def rows():
    generator = torch.Generator().manual_seed(5)
    return [torch.randint(3, 300, (length,), generator=generator) for length in (7, 4, 2)]


def padded(seqs, *, left):
    """(ids, mask, labels): labels on all but each row's first 2 tokens (the source, as in
    rpt-train's data: a left-padded row's first token follows padding, never P')."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, s in enumerate(seqs):
        start = width - len(s) if left else 0
        ids[i, start : start + len(s)], mask[i, start : start + len(s)] = s, 1
        labels[i, start + 2 : start + len(s)] = s[2:]
    return ids, mask, labels


@pytest.mark.parametrize("kind", KINDS)
def test_logits_and_loss_do_not_depend_on_the_padding_side(kind):
    model, seqs = prompt_model(kind), rows()
    (right, right_mask, labels_r), (left, left_mask, labels_l) = padded(seqs, left=False), padded(seqs, left=True)
    out_r, out_l = model(right, right_mask, labels_r), model(left, left_mask, labels_l)
    torch.testing.assert_close(out_r.loss, out_l.loss, rtol=1e-10, atol=1e-10)
    width = right.shape[1]
    for i, s in enumerate(seqs):
        alone = model(s[None], torch.ones(1, len(s), dtype=torch.long)).logits[0]
        real = torch.cat([torch.arange(N), N + width - len(s) + torch.arange(len(s))])
        torch.testing.assert_close(out_r.logits[i, : N + len(s)], alone, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out_l.logits[i, real], alone, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_generation_is_greedy_decoding_one_example_at_a_time(kind):
    model, seqs = prompt_model(kind), rows()
    ids, mask, _ = padded(seqs, left=True)
    kwargs = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    new = model.generate(ids, mask, **kwargs)
    assert new.shape == (3, 4)  # only the new tokens
    for i, s in enumerate(seqs):
        assert torch.equal(model.generate(s[None], torch.ones(1, len(s), dtype=torch.long), **kwargs)[0], new[i])
        whole = torch.cat([s, new[i, :-1]])[None]
        assert torch.equal(model(whole, torch.ones_like(whole)).logits[0, -4:].argmax(-1), new[i])


class Recorded(Task):
    """A task that keeps the predictions it is scored on."""

    def metrics(self, predictions, examples):
        self.predictions = predictions
        return super().metrics(predictions, examples)


def _task():
    train = [Example(f"sample {i}", "yes" if i % 2 else "no") for i in range(8)]
    evals = [Example(f"probe {i} words", "no" if i % 3 else "yes") for i in range(5)]
    return Recorded("synthetic", train, evals, "accuracy")


def test_generation_evaluation_fills_the_kv_cache_once_with_p_prime_and_the_source():
    model = prompt_model("tiny-llama")
    model.backbone.config.use_cache = False  # as --gradient-checkpointing leaves it for training
    lengths = []
    def record(_module, _args, kwargs):
        inputs = kwargs["input_ids"] if kwargs.get("inputs_embeds") is None else kwargs["inputs_embeds"]
        lengths.append(inputs.shape[1])

    model.backbone.model.register_forward_pre_hook(record, with_kwargs=True)
    task = _task()
    encoded = encode_examples(task.eval, BYT5, encoder_decoder=False, max_input_length=32, max_target_length=6)
    evaluate(model, task, encoded, BYT5, CPU, batch_size=8, max_new_tokens=6, synced_gpus=False,
             autocast_dtype=None)
    source = max(len(e.prompt_ids) for e in encoded)
    assert lengths[0] == N + source and set(lengths[1:]) == {1} and len(lengths) > 2


def test_generation_evaluation_decodes_the_new_tokens_before_eos():
    model, task = prompt_model("tiny-llama"), _task()
    (yes, no), eos = BYT5(["yes", "no"], add_special_tokens=False)["input_ids"], BYT5.eos_token_id
    # no EOS (the length ran out); EOS then padding; EOS then more tokens
    outputs = [yes + [90], no + [0, 0], yes[:1] + [eos] + yes[1:]]
    model.generate = lambda **_: torch.tensor(outputs + [outputs[0]] * 2)
    encoded = encode_examples(task.eval, BYT5, encoder_decoder=False, max_input_length=32, max_target_length=6)
    evaluate(model, task, encoded, BYT5, CPU, batch_size=8, max_new_tokens=4, synced_gpus=False, autocast_dtype=None)
    assert task.predictions[:3] == ["yes" + chr(90 - 3), "no", "y"]


@pytest.mark.parametrize("kind", ["tiny-llama", "qwen2"])
def test_cached_likelihood_equals_the_whole_sequence_likelihood(kind):
    model = prompt_model(kind)
    examples = [Example("a much longer input sentence", ""), Example("short", ""), Example("mid length", "")]
    labels = ["no", "yes", "not at all"]  # 3, 4 and 11 tokens with EOS: padded continuations
    lengths = {"max_input_length": 32, "max_target_length": 16}
    got = likelihood.scores(model, examples, labels, BYT5, CPU.device, autocast_dtype=None, **lengths)
    for i, example in enumerate(examples):
        for k, label in enumerate(labels):
            (enc,) = encode_examples([Example(example.input, label)], BYT5, encoder_decoder=False, **lengths)
            ids = torch.tensor([enc.input_ids])
            logprobs = torch.log_softmax(model(ids, torch.ones_like(ids)).logits[0, N - 1 : -1], dim=-1)
            source = len(enc.prompt_ids)
            target = torch.tensor(enc.labels[source:])
            expected = logprobs[source:].gather(-1, target[:, None]).sum()
            torch.testing.assert_close(got[i, k], expected.float(), rtol=1e-6, atol=1e-6)
    assert likelihood.predict(model, examples, labels, BYT5, CPU.device, autocast_dtype=None, **lengths) == [
        labels[k] for k in got.argmax(1).tolist()]


TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2}}


@pytest.mark.parametrize("dtype", sorted(TOLERANCE, key=str), ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_peft_causal_lm_adapter_gives_the_models_logits(kind, dtype, tmp_path):
    model = prompt_model(kind, dtype)
    assert model.prompt_encoder.prompt.dtype == torch.float32  # P and the MLP stay fp32
    ids, mask, labels = padded(rows(), left=False)
    with torch.no_grad():
        ours = model(ids, mask, labels=labels)
    model.export_peft(tmp_path)
    loaded = peft.PeftModel.from_pretrained(model.backbone, str(tmp_path)).eval()
    assert loaded.peft_config["default"].task_type == "CAUSAL_LM"
    with torch.no_grad():
        theirs = loaded(input_ids=ids, attention_mask=mask, labels=labels)
    assert theirs.logits.dtype == dtype and theirs.logits.shape == ours.logits.shape
    torch.testing.assert_close(theirs.logits, ours.logits, **TOLERANCE[dtype])
    torch.testing.assert_close(theirs.loss, ours.loss, **TOLERANCE[dtype])
