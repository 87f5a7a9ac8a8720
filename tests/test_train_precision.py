"""``--bf16`` keeps P and the MLP in fp32 under every ZeRO stage and parameter offload (NVMe
included), and ZeRO-3 reduces their gradients in fp32; the prompt encoder draws its init from
the CPU RNG in every mode."""

import json
import os
import sys
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

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


@pytest.mark.timeout(600)
def test_bf16_trainable_parameters_stay_exact_fp32_through_nvme_parameter_offload(tmp_path):
    if not harness.async_io_builds():
        pytest.skip("DeepSpeed's async_io op cannot be built here (no libaio headers): NVMe offload is untestable")
    out = tmp_path / "probe.json"
    # Bottleneck 8192: the MLP's 8192 x 64 matrices are 1 MiB in bf16, the smallest partition
    # DeepSpeed hands to its (bf16) NVMe swap buffers. Random P: the vocab init reads the
    # embedding, bf16 under ZeRO-3 but fp32 in plain mode.
    harness.run([sys.executable, os.path.join(harness.SCRIPTS, "precision_probe.py"), str(out), "plain,3/cpu,3/nvme",
                 "--bf16", "--output-dir", str(tmp_path / "runs"), "--nvme-path", str(tmp_path / "nvme"),
                 "--eval-interval", "0", "--backend", "eager", *harness.SMALL, "--bottleneck", "8192",
                 "--prompt-init", "random"], timeout=580)  # the first run builds async_io (minutes)
    results = json.loads(out.read_text())
    assert results["3/nvme"]["nvme_swaps_largest_trainable"] is True  # the size DeepSpeed would swap
    plain = load_file(tmp_path / "probe.plain.safetensors")
    for setting in ("3-cpu", "3-nvme"):
        built = load_file(tmp_path / f"probe.{setting}.safetensors")
        for name, tensor in plain.items():  # bit-exact fp32 copies of the plain mode's init
            assert built[name].dtype == torch.float32 and torch.equal(built[name], tensor), (setting, name)
    for setting in ("3/cpu", "3/nvme"):
        assert results[setting]["trainable_stored"] == ["torch.float32"], results[setting]
        assert results[setting]["changed"], results[setting]
    assert results["3/nvme"]["loss"] == results["3/cpu"]["loss"]


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
