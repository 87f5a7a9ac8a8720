"""``--bf16`` keeps P and the MLP in fp32 under every ZeRO stage, and ZeRO-3 reduces their
gradients in fp32; the prompt encoder draws its init from the CPU RNG in every mode."""

import json
import os
import sys
from unittest import mock

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402


@pytest.mark.timeout(300)
def test_bf16_trainable_parameters_stay_fp32_under_every_stage(tmp_path):
    out = tmp_path / "probe.json"
    harness.run([sys.executable, os.path.join(harness.SCRIPTS, "precision_probe.py"), str(out), "0,1,2,3",
                 "--bf16", "--output-dir", str(tmp_path / "runs"), "--eval-interval", "0", "--backend", "eager",
                 *harness.SMALL], timeout=280)
    results = json.loads(out.read_text())
    for stage, r in results.items():
        assert r["trainable"] == ["torch.float32"], (stage, r)
        assert r["trainable_stored"] == ["torch.float32"], (stage, r)
        assert r["backbone"] == "torch.bfloat16", (stage, r)
        assert r["changed"] and r["loss"] == r["loss"], (stage, r)  # it stepped, loss not NaN
        assert r["engine_communication"] == "torch.float32", (stage, r)
    assert results["3"]["zero3_communication"] == "torch.float32"


def test_prompt_encoder_is_built_on_the_cpu_whatever_the_backbone_device():
    from transformers import T5Config, T5ForConditionalGeneration

    from rpt_fast import prompt as prompt_module

    backbone = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=8, d_ff=16, d_kv=4, num_heads=2,
                                                   num_layers=1, decoder_start_token_id=0))
    real = prompt_module.ResidualPromptEncoder
    with mock.patch.object(prompt_module, "ResidualPromptEncoder", side_effect=real) as built:
        model = prompt_module.ResidualPromptModel(backbone, 4, 6, init="random")
    assert built.call_args.kwargs["device"] == "cpu"  # the CPU RNG draws the init, then it moves
    assert model.prompt_encoder.prompt.device == backbone.get_input_embeddings().weight.device
