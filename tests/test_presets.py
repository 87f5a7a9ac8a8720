"""Architecture presets: published parameter counts (models built on the meta device, so the
70B preset costs nothing), the families they build, and weights that depend on the seed alone."""

import pytest
import torch
from transformers import AutoModelForCausalLM, T5ForConditionalGeneration

from rpt_fast.presets import DECODER_PRESETS, PRESETS, T5_PRESETS, build_backbone, preset_config, preset_dict

# Parameter counts of the published checkpoints (their model cards / safetensors index).
PUBLISHED = {
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "qwen2.5-7b": 7_615_616_512,
    "mistral-7b": 7_248_023_552,
}


def _meta_params(name: str) -> int:
    config = preset_config(name)
    auto = T5ForConditionalGeneration if config.model_type == "t5" else AutoModelForCausalLM.from_config
    with torch.device("meta"):
        model = auto(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name):
    assert _meta_params(name) == PUBLISHED[name]


def test_every_preset_is_a_config_json_of_its_family():
    assert set(PRESETS) == set(T5_PRESETS) | set(DECODER_PRESETS)
    for name in PRESETS:
        raw = preset_dict(name)
        assert raw["model_type"] == preset_config(name).model_type
        raw["vocab_size"] = -1  # a fresh copy: the registry itself is untouched
        assert PRESETS[name]["vocab_size"] > 0


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match=r"model preset: expected one of .*'t5-tiny'.*got 'llama-9b'"):
        preset_config("llama-9b")


@pytest.mark.parametrize("name,cls", [("t5-tiny", "T5ForConditionalGeneration"), ("tiny-llama", "LlamaForCausalLM")])
def test_tiny_presets_build_with_seeded_weights(name, cls):
    first, again, other = build_backbone(name, seed=3), build_backbone(name, seed=3), build_backbone(name, seed=4)
    assert type(first).__name__ == cls and not first.training
    for (key, a), b, c in zip(first.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b), key
        if a.dim() == 2:
            assert not torch.equal(a, c), key
    # The byte-level tokenizer's ids, so both train on the same data without files.
    config = first.config
    assert (config.vocab_size, config.pad_token_id, config.eos_token_id) == (384, 0, 1)


def test_decoder_init_scheme():
    model = build_backbone("tiny-llama", seed=0)
    for name, p in model.named_parameters():
        if p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), name  # RMSNorm weights
        else:
            assert abs(p.std().item() - model.config.initializer_range) < 0.2 * model.config.initializer_range, name
