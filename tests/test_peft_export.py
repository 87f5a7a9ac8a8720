"""export_peft writes a PEFT PROMPT_TUNING adapter holding P'; PEFT loads it onto the bare
backbone and gives ResidualPromptModel's logits, loss and generations (T5 and GPT-2)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel, T5ForConditionalGeneration

from rpt_fast.presets import t5_config
from rpt_fast.prompt import ResidualPromptModel

peft = pytest.importorskip("peft")

NUM_TOKENS = 6


def tiny_t5():
    return T5ForConditionalGeneration(t5_config("t5-tiny", dropout_rate=0.0))


def tiny_gpt2():
    config = GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(config)


BACKBONES = {"t5": tiny_t5, "gpt2": tiny_gpt2}


def batch(vocab):
    ids = torch.randint(2, vocab, (3, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    return ids, mask


def trained_looking_model(kind):
    model = ResidualPromptModel(BACKBONES[kind](), NUM_TOKENS, 16, seed=2).eval()
    with torch.no_grad():  # fresh, non-trivial MLP parameters, as after some training
        for param in model.prompt_encoder.mlp.parameters():
            param.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_export_peft_loads_with_same_logits(kind, tmp_path):
    model = trained_looking_model(kind)
    vocab = model.backbone.config.vocab_size
    ids, mask = batch(vocab)
    labels = torch.randint(2, vocab, (3, 4)) if kind == "t5" else ids
    with torch.no_grad():
        ours = model(ids, mask, labels)
    save_dir = tmp_path / "adapter" / "nested"
    model.export_peft(save_dir)

    config = json.loads((save_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING"
    assert config["task_type"] == ("SEQ_2_SEQ_LM" if kind == "t5" else "CAUSAL_LM")
    assert config["num_transformer_submodules"] == 1
    assert config["num_virtual_tokens"] == NUM_TOKENS
    assert config["token_dim"] == model.backbone.config.hidden_size
    tensors = load_file(str(save_dir / "adapter_model.safetensors"))
    assert list(tensors) == ["prompt_embeddings"]
    torch.testing.assert_close(tensors["prompt_embeddings"], model.projected_prompt(), rtol=0, atol=0)

    loaded = peft.PeftModel.from_pretrained(model.backbone, str(save_dir)).eval()
    with torch.no_grad():
        theirs = loaded(input_ids=ids, attention_mask=mask, labels=labels)
    assert theirs.logits.shape == ours.logits.shape
    torch.testing.assert_close(theirs.logits, ours.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theirs.loss, ours.loss, rtol=1e-5, atol=1e-5)


def test_peft_generation_matches_t5(tmp_path):
    model = trained_looking_model("t5")
    ids, mask = batch(384)
    kwargs = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False}
    ours = model.generate(ids, mask, **kwargs)
    model.export_peft(tmp_path)
    loaded = peft.PeftModel.from_pretrained(model.backbone, str(tmp_path)).eval()
    theirs = loaded.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(theirs, ours)
