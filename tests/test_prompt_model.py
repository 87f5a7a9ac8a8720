"""ResidualPromptModel on tiny random T5 and GPT-2 backbones: freezing, forward against a manual
concatenation (float64), decoder-only label padding, generation, vocab init (also under
DeepSpeed ZeRO-3 on a CPU rank), save_prompt, and argument errors."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    T5ForConditionalGeneration,
)

from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference
from rpt_fast.presets import t5_config
from rpt_fast.prompt import ResidualPromptModel

NUM_TOKENS = 5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_t5(dtype=torch.float32):
    torch.manual_seed(1)
    return T5ForConditionalGeneration(t5_config("t5-tiny", dropout_rate=0.0)).to(dtype).eval()


def tiny_gpt2(dtype=torch.float32):
    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=1, eos_token_id=1, pad_token_id=0,
    )
    return GPT2LMHeadModel(config).to(dtype).eval()


BACKBONES = {"t5": tiny_t5, "gpt2": tiny_gpt2}


def make_model(kind, dtype=torch.float32, **kwargs):
    kwargs.setdefault("seed", 3)
    model = ResidualPromptModel(BACKBONES[kind](dtype), NUM_TOKENS, 12, **kwargs).eval()
    # Fresh, non-trivial MLP parameters (the LayerNorm starts as 1/0 otherwise).
    with torch.no_grad():
        for param in model.prompt_encoder.mlp.parameters():
            param.uniform_(-0.5, 0.5)
    return model


def batch(vocab=300, seq=6, padded=True):
    ids = torch.randint(2, vocab, (3, seq))
    mask = torch.ones_like(ids)
    if padded:
        mask[1, seq - 2 :] = 0
        mask[2, seq - 3 :] = 0
    return ids, mask


def manual_prompt(model):
    mlp = model.prompt_encoder.mlp
    return residual_mlp_reference(
        model.prompt_encoder.prompt, mlp.down.weight, mlp.down.bias, mlp.up.weight,
        mlp.up.bias, mlp.norm.weight, mlp.norm.bias, mlp.norm.eps,
    )


def manual_inputs(model, ids, mask, prompt):
    """P' before the embeddings, ones before the mask: the computation the wrapper must do."""
    embeds = model.backbone.get_input_embeddings().weight[ids]
    prompt = prompt.to(embeds.dtype)
    embeds = torch.cat([prompt.expand(ids.shape[0], -1, -1), embeds], dim=1)
    mask = torch.cat([torch.ones(ids.shape[0], NUM_TOKENS, dtype=mask.dtype), mask], dim=1)
    return embeds, mask


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_backbone_frozen_only_prompt_trains(kind):
    model = make_model(kind)
    assert model.is_encoder_decoder == (kind == "t5")
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.prompt_encoder.parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == trainable
    assert model.prompt_encoder.prompt.dtype == torch.float32
    ids, mask = batch()
    labels = torch.randint(2, 300, (3, 4)) if kind == "t5" else ids
    model(ids, mask, labels).loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_parameters())


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_forward_matches_manual_concatenation(kind):
    model = make_model(kind, torch.float64)
    assert model.prompt_encoder.prompt.dtype == torch.float64
    ids, mask = batch()
    labels = torch.randint(2, 300, (3, 4)) if kind == "t5" else ids.masked_fill(mask == 0, -100)
    out = model(ids, mask, labels)
    embeds, full_mask = manual_inputs(model, ids, mask, manual_prompt(model))
    if kind == "t5":
        expected = model.backbone(inputs_embeds=embeds, attention_mask=full_mask, labels=labels)
    else:
        pad = torch.full((3, NUM_TOKENS), -100)
        expected = model.backbone(
            inputs_embeds=embeds, attention_mask=full_mask, labels=torch.cat([pad, labels], 1)
        )
        assert out.logits.shape == (3, NUM_TOKENS + ids.shape[1], 300)
    torch.testing.assert_close(out.logits, expected.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-12, atol=1e-12)
    # The prompt matters, and masked input positions do not (the mask was extended, not shifted).
    shifted = ids.masked_fill(mask == 0, 7)
    torch.testing.assert_close(model(shifted, mask, labels).loss, out.loss, rtol=1e-12, atol=1e-12)
    no_prompt = model.backbone(input_ids=ids, attention_mask=mask, labels=labels)
    assert not torch.allclose(no_prompt.loss, out.loss)


def test_decoder_only_loss_ignores_prompt_positions():
    model = make_model("gpt2", torch.float64)
    ids, mask = batch(padded=False)
    out = model(ids, mask, ids)
    # HF shifts labels by one: position NUM_TOKENS - 1 (the last prompt token) predicts ids[:, 0].
    logits = out.logits[:, NUM_TOKENS - 1 : -1].float()  # HF's loss upcasts to float32
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_t5_generate_is_greedy_decoding_of_forward():
    model = make_model("t5")
    ids, mask = batch(vocab=384)
    generated = model.generate(ids, mask, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape == (3, 5) and (generated[:, 0] == 0).all()  # decoder start = pad
    logits = model(ids, mask, decoder_input_ids=generated[:, :-1]).logits
    assert torch.equal(logits.argmax(-1), generated[:, 1:])


def test_decoder_only_generate_returns_only_new_tokens():
    model = make_model("gpt2")
    ids, mask = batch(padded=False)
    new = model.generate(ids, mask, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    assert new.shape == (3, 3)
    whole = torch.cat([ids, new[:, :-1]], dim=1)
    logits = model(whole, torch.ones_like(whole)).logits
    assert torch.equal(logits[:, -3:].argmax(-1), new)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_vocab_init_picks_embedding_rows_deterministically(kind):
    a, b, c = (ResidualPromptModel(BACKBONES[kind](), 8, 4, seed=s) for s in (5, 5, 6))
    weight = a.backbone.get_input_embeddings().weight
    prompt = a.prompt_encoder.prompt.detach()
    assert (prompt[:, None, :] == weight[None]).all(-1).any(-1).all()  # rows of the embedding
    assert torch.equal(prompt, b.prompt_encoder.prompt)
    assert not torch.equal(prompt, c.prompt_encoder.prompt)


def test_random_and_tensor_init():
    model = ResidualPromptModel(tiny_t5(), 7, 4, init="random")
    prompt = model.prompt_encoder.prompt
    assert prompt.abs().max() <= 0.5 and prompt.std() > 0.1
    init = torch.randn(7, 64)
    model = ResidualPromptModel(tiny_t5(), 7, 4, init=init)
    assert torch.equal(model.prompt_encoder.prompt.detach(), init)


def test_projected_prompt_and_save_prompt_round_trip(tmp_path):
    model = make_model("t5", dropout=0.5).train()
    projected = model.projected_prompt()
    assert model.training and not projected.requires_grad
    torch.testing.assert_close(projected, manual_prompt(model).detach())  # no dropout
    model.save_prompt(tmp_path / "p.safetensors")
    saved = load_file(str(tmp_path / "p.safetensors"))
    assert list(saved) == ["prompt_embeddings"]
    assert torch.equal(saved["prompt_embeddings"], projected)


def test_separate_prompt_encoder_is_used():
    model = make_model("t5", torch.float64, separate=True)
    assert {id(p) for p in model.parameters() if p.requires_grad} == {
        id(p) for p in model.prompt_encoder.parameters()
    }
    mlp = model.prompt_encoder.mlp
    prompt = grouped_residual_mlp_reference(
        model.prompt_encoder.prompt, mlp.down_weight, mlp.down_bias, mlp.up_weight, mlp.up_bias,
        mlp.norm_weight, mlp.norm_bias,
    )
    ids, mask = batch(vocab=384)
    embeds, full_mask = manual_inputs(model, ids, mask, prompt)
    labels = torch.randint(2, 300, (3, 4))
    expected = model.backbone(inputs_embeds=embeds, attention_mask=full_mask, labels=labels)
    torch.testing.assert_close(model(ids, mask, labels).logits, expected.logits, rtol=1e-12, atol=1e-12)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(TypeError, match="backbone: expected a transformers T5ForConditionalGeneration"):
        ResidualPromptModel(torch.nn.Linear(2, 2))
    tiny = {"vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 8}
    with pytest.raises(TypeError, match="backbone: expected a .* causal LM.*got BertModel"):
        ResidualPromptModel(BertModel(BertConfig(**tiny)))
    bart = BartConfig(vocab_size=50, d_model=8, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=8,
                      decoder_ffn_dim=8)
    with pytest.raises(TypeError, match="encoder-decoder models must be T5-family .* 'bart'"):
        ResidualPromptModel(BartForConditionalGeneration(bart))
    with pytest.raises(ValueError, match="num_tokens: expected a positive int, got 0"):
        ResidualPromptModel(tiny_t5(), 0)
    with pytest.raises(ValueError, match="init: expected 'vocab', 'random' or a tensor of shape"):
        ResidualPromptModel(tiny_t5(), 4, 8, init="text")
    with pytest.raises(ValueError, match=r"init: expected a tensor of shape \(4, 64\), got \(4, 3\)"):
        ResidualPromptModel(tiny_t5(), 4, 8, init=torch.zeros(4, 3))
    model = make_model("gpt2")
    ids, mask = batch()
    with pytest.raises(TypeError, match="input_ids: expected an integer tensor, got dtype torch.float32"):
        model(ids.float(), mask)
    with pytest.raises(ValueError, match=r"input_ids: expected a 2-D \(batch, seq_len\) tensor"):
        model(ids[0], mask)
    with pytest.raises(ValueError, match=r"attention_mask: expected the shape of input_ids \(3, 6\)"):
        model(ids, mask[:, :4])
    with pytest.raises(ValueError, match=r"labels: expected the shape of input_ids \(3, 6\), got"):
        model(ids, mask, ids[:, :2])
    with pytest.raises(ValueError, match="input_ids: expected device cpu"):
        model(ids.to("meta"), None)


ZERO3_SCRIPT = textwrap.dedent(
    """
    import importlib
    import torch, deepspeed
    from transformers import T5ForConditionalGeneration
    from rpt_fast.presets import t5_config
    from rpt_fast.prompt import ResidualPromptModel

    # One rank needs no shared-memory collectives: skip building that op (a minute or more).
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")
    ds_config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}}
    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        zero_backbone = T5ForConditionalGeneration(t5_config("t5-tiny"))
    weight = zero_backbone.get_input_embeddings().weight
    assert hasattr(weight, "ds_id") and weight.numel() == 0, "the embedding is not partitioned"
    zero_model = ResidualPromptModel(zero_backbone, 6, 16, init="vocab", seed=5)
    with deepspeed.zero.GatheredParameters([weight]):
        full = weight.detach().clone()
    plain_backbone = T5ForConditionalGeneration(t5_config("t5-tiny"))
    with torch.no_grad():
        plain_backbone.get_input_embeddings().weight.copy_(full)
    plain_model = ResidualPromptModel(plain_backbone, 6, 16, init="vocab", seed=5)
    zero_prompt = zero_model.prompt_encoder.prompt.detach()
    assert torch.equal(zero_prompt, plain_model.prompt_encoder.prompt.detach())
    assert (zero_prompt[:, None, :] == full[None]).all(-1).any(-1).all()
    assert weight.numel() == 0, "the embedding was left gathered"
    print("ZERO3-VOCAB-OK")
    """
)


def test_vocab_init_under_deepspeed_zero3(tmp_path):
    pytest.importorskip("deepspeed")
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "0",  # one rank: the store binds a port the OS picks, no race with other tests
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions"),
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", ZERO3_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )
    assert result.returncode == 0 and "ZERO3-VOCAB-OK" in result.stdout, result.stdout + result.stderr
