"""Data order, sharding and tokenization of the trainer: deterministic in (seed, step) only."""

import pytest
import torch
from transformers import ByT5Tokenizer

from rpt_fast.train.data import (
    IGNORE_INDEX, StepSampler, collate_generate, collate_train, encode_examples, epoch_order, eval_shard,
)
from rpt_fast.train.tasks import Example


def test_epoch_order_depends_on_seed_and_epoch_only():
    torch.manual_seed(123)  # global RNG state must not matter
    a = epoch_order(50, seed=3, epoch=2)
    torch.manual_seed(999)
    assert torch.equal(a, epoch_order(50, seed=3, epoch=2))
    assert not torch.equal(a, epoch_order(50, seed=3, epoch=3))
    assert not torch.equal(a, epoch_order(50, seed=4, epoch=2))
    assert sorted(a.tolist()) == list(range(50))


def test_ranks_split_each_global_batch_and_epochs_cover_the_data():
    samplers = [StepSampler(37, 6, seed=1, rank=r, world_size=3) for r in range(3)]
    assert samplers[0].steps_per_epoch == 6  # 37 // 6, the partial batch dropped
    seen = []
    for step in range(6):
        parts = [s.rank_batch(step) for s in samplers]
        assert all(len(p) == 2 for p in parts)
        assert sum(parts, []) == samplers[0].global_batch(step)
        seen += samplers[0].global_batch(step)
    assert len(set(seen)) == 36
    # Step 6 starts epoch 1 with a new order; a fresh sampler (a resumed run) agrees.
    assert StepSampler(37, 6, seed=1, rank=0, world_size=1).global_batch(6) == samplers[1].global_batch(6)
    assert samplers[0].global_batch(6) != samplers[0].global_batch(0)


def test_sampler_rejects_uneven_split_and_tiny_sets():
    with pytest.raises(ValueError, match="batch_size: 5 does not split evenly over 2 ranks"):
        StepSampler(10, 5, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="3 examples, fewer than one batch of 4"):
        StepSampler(3, 4, seed=0, rank=0, world_size=1)


def test_eval_shards_cover_everything_with_equal_lengths():
    shards = [eval_shard(11, r, 4) for r in range(4)]
    assert {len(s) for s in shards} == {3}
    assert set(sum(shards, [])) == set(range(11))


@pytest.fixture(scope="module")
def tokenizer():
    return ByT5Tokenizer()


def test_encoder_decoder_encoding(tokenizer):
    (enc,) = encode_examples([Example("ab", "yes")], tokenizer, encoder_decoder=True,
                             max_input_length=8, max_target_length=8)
    eos = tokenizer.eos_token_id
    assert enc.input_ids == tokenizer("ab", add_special_tokens=False)["input_ids"] + [eos]
    assert enc.labels == tokenizer("yes", add_special_tokens=False)["input_ids"] + [eos]
    assert enc.num_label_tokens == 4


def test_decoder_only_encoding_labels_the_target_only(tokenizer):
    (enc,) = encode_examples([Example("abcdef", "yes")], tokenizer, encoder_decoder=False,
                             max_input_length=4, max_target_length=3)
    src = tokenizer("abc\n", add_special_tokens=False)["input_ids"]  # the input cut, then the separator
    tgt = tokenizer("ye", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert enc.input_ids == src + tgt and enc.prompt_ids == src
    assert enc.labels == [IGNORE_INDEX] * 4 + tgt
    # The count matches what a causal LM's shifted loss sees (P' comes first: every label counts).
    assert enc.num_label_tokens == sum(label != IGNORE_INDEX for label in enc.labels)


def test_collate_pads_and_masks(tokenizer):
    encoded = encode_examples([Example("a", "x"), Example("abcd", "xyz")], tokenizer, encoder_decoder=False,
                              max_input_length=16, max_target_length=16)
    batch = collate_train(encoded, pad_id=0)
    assert batch["input_ids"].shape == (2, 9)
    assert batch["attention_mask"].sum(1).tolist() == [4, 9]
    assert (batch["labels"][0, 4:] == IGNORE_INDEX).all()
    gen = collate_generate(encoded, pad_id=0, encoder_decoder=False)
    assert gen["attention_mask"].tolist()[0] == [0, 0, 0, 1, 1]  # left-padded for generation
