"""The planner for decoder-only families (rpt_fast.arch_decoder): exact parameter tensors against
the transformers models of tiny configs of every family, exact FLOPs against torch's
FlopCounterMode, the published presets through rpt-memory (plans that fit one 24 GB GPU, a 70B
model on 8 x 80 GB), and rpt-train's auto choice modelling them (the rough guess only for
families the planner does not know). Activations: tests/test_memory.py runs check_memory's cases."""

import json

import pytest
import torch

from rpt_fast.memory import GIB, Setup, arch_from_config, backbone_params, backbone_tensors
from rpt_fast.step_time import step_flops
from rpt_fast.train import autoplan
from rpt_fast.train.config import TrainConfig
from rpt_fast.train.memory_cli import main

_SHAPE = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
          "vocab_size": 200, "max_position_embeddings": 128}
FAMILY_CONFIGS = {
    "llama": {"model_type": "llama", **_SHAPE, "num_key_value_heads": 2},
    "llama tied, biases": {"model_type": "llama", **_SHAPE, "num_key_value_heads": 2, "tie_word_embeddings": True,
                           "attention_bias": True, "mlp_bias": True},
    "mistral": {"model_type": "mistral", **_SHAPE, "num_key_value_heads": 2, "sliding_window": None},
    "qwen2": {"model_type": "qwen2", **_SHAPE, "num_key_value_heads": 2},
    "gemma": {"model_type": "gemma", **_SHAPE, "num_key_value_heads": 1, "head_dim": 24},
    "gemma untied": {"model_type": "gemma", **_SHAPE, "num_key_value_heads": 4, "head_dim": 16,
                     "tie_word_embeddings": False, "attention_bias": True},
    "gemma2": {"model_type": "gemma2", **_SHAPE, "num_key_value_heads": 2, "head_dim": 24,
               "query_pre_attn_scalar": 24},
    "gpt_neox": {"model_type": "gpt_neox", **_SHAPE},
    "gpt_neox sequential, no bias": {"model_type": "gpt_neox", **_SHAPE, "use_parallel_residual": False,
                                     "attention_bias": False, "tie_word_embeddings": True},
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 96, "vocab_size": 200,
             "n_positions": 128},
    "gpt2 untied": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 200,
                    "n_positions": 128, "tie_word_embeddings": False},
}


def _build(name: str, attention: str = "eager"):
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = dict(FAMILY_CONFIGS[name])
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    config._attn_implementation = attention
    for key in ("attention_dropout", "hidden_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop"):
        if hasattr(config, key):
            setattr(config, key, 0.0)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("name", FAMILY_CONFIGS)
def test_parameter_tensors_exact(name):
    model = _build(name)
    arch = arch_from_config(FAMILY_CONFIGS[name])
    assert backbone_params(arch) == sum(p.numel() for p in model.parameters())
    # tensor by tensor, as ZeRO-3 partitions and persists them
    predicted = sorted(n for _, n, count in backbone_tensors(arch) for _ in range(count))
    assert predicted == sorted(p.numel() for p in model.parameters())


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma", "gemma2", "gpt_neox", "gpt2"])
def test_flops_are_what_torch_counts(name, checkpointing):
    # eager attention (torch's counter does not see CPU sdpa's kernel); backward without weight
    # gradients; under checkpointing the recompute is in the backward's count
    from torch.utils.flop_counter import FlopCounterMode

    model = _build(name).train()
    model.requires_grad_(False)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(0)
    batch, prompt_len, source, target = 2, 4, 12, 4
    prompt = torch.randn(prompt_len, model.config.hidden_size, requires_grad=True)
    ids = torch.randint(2, model.config.vocab_size, (batch, source + target))
    labels = torch.cat([ids.new_full((batch, prompt_len + source), -100), ids[:, source:]], dim=1)
    with FlopCounterMode(display=False) as forward:
        embeds = torch.cat([prompt.expand(batch, -1, -1), model.get_input_embeddings()(ids)], dim=1)
        loss = model(inputs_embeds=embeds, labels=labels).loss
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    s = Setup(batch_size=batch, num_tokens=prompt_len, source_length=source, target_length=target, bf16=False,
              attention="eager", grad_checkpointing=checkpointing)
    predicted = step_flops(arch_from_config(FAMILY_CONFIGS[name]), s)
    # transformers 5.17 computes the rotary angles as a matmul (5.25 does not), rotary_dim x N FLOPs
    # (3e-5 of this forward), left out
    assert predicted["forward"] == pytest.approx(forward.get_total_flops(), rel=1e-4, abs=0)
    assert predicted["backward"] + predicted["recompute"] == backward.get_total_flops()


@pytest.mark.parametrize("name,count", [("llama-3.1-8b", 8_030_261_248), ("qwen2.5-7b", 7_615_616_512)])
def test_published_presets_fit_one_24gb_gpu_in_bf16(name, count, capsys):
    assert main(["--model", name, "--bf16", "--gpu-memory", "24GB", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["backbone_params"] == count and out["plan"]["arch"]["family"] in ("llama", "qwen2")
    assert out["fits"] and out["plan"]["gpu_total"] <= 24 * GIB and out["suggestions"]
    assert out["choice"].startswith("ZeRO stage 0 (no partitioning) + gradient checkpointing: predicted")
    assert main(["--model", name, "--bf16", "--gpu", "rtx-4090"]) == 0
    assert f"{count:,} (" in capsys.readouterr().out


def test_a_70b_model_fits_eight_80gb_gpus(capsys):
    assert main(["--model", "llama-3.1-70b", "--bf16", "--gpu", "h100", "--world-size", "8", "--batch-size", "64",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["backbone_params"] == 70_553_706_496 and out["plan"]["setup"]["zero_stage"] == 3


def test_auto_models_known_families_and_guesses_only_unknown_ones(tmp_path):
    from transformers import OPTConfig

    sizes = autoplan.model_sizes(TrainConfig(model="llama-3.1-8b"))
    assert sizes.modelled and sizes.largest_tensor == 128256 * 4096 and sizes.dropout == 0.0
    chosen, reason = autoplan.resolve(TrainConfig(model="tiny-llama", gpu_memory="1GB").validate(), 1, None)
    assert (chosen.zero_stage, chosen.offload_param) == (0, "none") and "per step" in reason
    OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
              vocab_size=100).save_pretrained(tmp_path)
    cfg = TrainConfig(model=str(tmp_path), gpu_memory="1GB").validate()
    assert not autoplan.model_sizes(cfg).modelled
    chosen, reason = autoplan.resolve(cfg, 1, None)
    assert chosen.zero_stage == 3 and "does not model this backbone's family" in reason
