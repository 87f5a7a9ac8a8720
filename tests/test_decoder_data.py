"""The data a decoder-only model trains on: one causal sequence ``[BOS] input \\n target EOS``
(or the tokenizer's chat template around the input; SuperGLUE's formatted inputs and label
words alike), the loss on the target and EOS only, the source cut to ``max_input_length`` at
the input's end; errors naming ``--chat-template``; the default generation length."""

import json
import os
import sys

import pytest
from transformers import ByT5Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import decoder_models  # noqa: E402
from cli_run import rpt_train  # noqa: E402

from rpt_fast.train.data import IGNORE_INDEX, causal_layout, encode_examples  # noqa: E402
from rpt_fast.train.evaluate import generation_length  # noqa: E402
from rpt_fast.train.tasks import Example, Task, get_task  # noqa: E402

BYT5 = ByT5Tokenizer()


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode(tokenizer, example, **kwargs):
    kwargs = {"max_input_length": 64, "max_target_length": 8, **kwargs}
    return encode_examples([example], tokenizer, encoder_decoder=False, **kwargs)[0]


def test_plain_layout_is_input_newline_target_eos_with_the_loss_on_the_target():
    enc = encode(BYT5, Example("good day", "yes"))
    source = ids(BYT5, "good day\n")  # ByT5 adds no BOS
    target = ids(BYT5, "yes") + [BYT5.eos_token_id]
    assert enc.prompt_ids == source and enc.input_ids == source + target
    assert enc.labels == [IGNORE_INDEX] * len(source) + target
    assert enc.num_label_tokens == len(target) == sum(label != IGNORE_INDEX for label in enc.labels)


def test_the_input_is_cut_so_the_source_fits_and_the_separator_stays():
    enc = encode(BYT5, Example("abcdefgh", "yes"), max_input_length=5, max_target_length=3)
    assert enc.prompt_ids == ids(BYT5, "abcd\n")
    assert enc.input_ids[5:] == ids(BYT5, "ye") + [BYT5.eos_token_id]
    with pytest.raises(ValueError, match="max_input_length: 1 tokens leave no room for the input"):
        encode(BYT5, Example("a", "b"), max_input_length=1)


def test_a_superglue_task_becomes_one_causal_sequence(tmp_path):
    from test_tasks import FIXTURES

    for name in ("train.jsonl", "val.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in FIXTURES["cb"]))
    task = get_task("cb", str(tmp_path))
    encoded = encode_examples(task.train, BYT5, encoder_decoder=False, max_input_length=256, max_target_length=16)
    whole = BYT5.decode(encoded[0].input_ids)
    assert whole == "premise: It rained. hypothesis: The ground is wet.\nentailment</s>"
    target = [label for label in encoded[0].labels if label != IGNORE_INDEX]
    assert BYT5.decode(target) == "entailment</s>"  # the loss sees the label word and EOS only


def test_bos_comes_first_when_the_tokenizer_adds_one():
    tokenizer = decoder_models.byte_tokenizer()
    assert tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id  # as Llama's does
    enc = encode(tokenizer, Example("hi", "ok"))
    assert enc.prompt_ids == [tokenizer.bos_token_id] + ids(tokenizer, "hi") + ids(tokenizer, "\n")
    assert causal_layout(BYT5).prefix == []


def test_chat_template_puts_the_input_in_a_user_turn_and_the_target_after_the_assistant_header():
    tokenizer = decoder_models.byte_tokenizer(chat_template=decoder_models.CHAT_TEMPLATE)
    enc = encode(tokenizer, Example("is it good?", "yes"), chat_template=True)
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "is it good?"}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == "<s><|user|>\nis it good?\n<|assistant|>\n"
    assert tokenizer.decode(enc.prompt_ids) == rendered
    assert enc.prompt_ids.count(tokenizer.bos_token_id) == 1  # the template's BOS, not a second one
    target = ids(tokenizer, "yes") + [tokenizer.eos_token_id]
    assert enc.input_ids == enc.prompt_ids + target and enc.labels[len(enc.prompt_ids):] == target
    # A long input is cut inside the user turn: the assistant header (generation prompt) stays.
    cut = encode(tokenizer, Example("x" * 100, "yes"), chat_template=True, max_input_length=30)
    assert len(cut.prompt_ids) == 30
    assert tokenizer.decode(cut.prompt_ids).endswith("xxx\n<|assistant|>\n")


def test_chat_template_errors_name_the_flag():
    with pytest.raises(ValueError, match=r"chat_template: the tokenizer \(ByT5Tokenizer, built in\) has no chat "
                                         "template; give --tokenizer"):
        encode(BYT5, Example("a", "b"), chat_template=True)
    with pytest.raises(ValueError, match="chat_template: chat templates format decoder-only models' inputs"):
        encode_examples([], BYT5, encoder_decoder=True, max_input_length=8, max_target_length=8, chat_template=True)
    odd = decoder_models.byte_tokenizer(chat_template="{{ messages[0]['content'] | upper }}")
    with pytest.raises(ValueError, match="chat_template: the tokenizer's template does not render a user message"):
        encode(odd, Example("a", "b"), chat_template=True)


def test_rpt_train_chat_template_without_a_template_is_a_one_line_error(tmp_path):
    proc = rpt_train(tmp_path, "--model", "tiny-llama", "--chat-template", "--no-progress", timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "rpt-train: error: --chat-template: the tokenizer (ByT5Tokenizer, built in) has no chat template; give "
        "--tokenizer a tokenizer folder whose tokenizer_config.json or chat_template.jinja has one, or leave out "
        "--chat-template"]
    assert os.listdir(tmp_path) == []  # refused before any run folder was made


def test_decoder_only_generation_length_is_the_longest_training_target():
    task = Task("cb", [Example("a", "neutral"), Example("b", "entailment")], [], "score", max_new_tokens=4)
    train = encode_examples(task.train, BYT5, encoder_decoder=False, max_input_length=16, max_target_length=32)
    assert generation_length(task, train, encoder_decoder=False, max_target_length=32) == len("entailment")
    # T5 keeps the official length (T5 tokens), else --max-target-length
    assert generation_length(task, train, encoder_decoder=True, max_target_length=32) == 4
    task.max_new_tokens = None
    assert generation_length(task, train, encoder_decoder=True, max_target_length=32) == 32
