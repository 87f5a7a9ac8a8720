"""The demo command end to end (loss falls, score rises, exports written), the exported PEFT
adapter loading with the real ``peft`` package, and the decoder-only path under ZeRO-3."""

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def _load_peft(backbone, out):
    from peft import PeftModel

    summary = harness.summary(out)
    assert os.path.isfile(summary["exports"]["prompt"])
    model = PeftModel.from_pretrained(backbone, summary["exports"]["peft"])
    loaded = model.get_prompt_embedding_to_save(adapter_name="default")
    torch.testing.assert_close(loaded, harness.prompt(out), rtol=0, atol=0)
    return model


def test_demo_command_learns_and_exports_a_peft_adapter(tmp_path):
    from transformers import AutoModelForSeq2SeqLM, ByT5Tokenizer

    from rpt_fast.presets import t5_config
    from rpt_fast.train.backbone import init_preset_weights

    out = str(tmp_path / "demo")
    # The README's first command, shortened (and on the eager backend: no compiler run in CI).
    proc = harness.train("--output-dir", out, "--max-steps", "120", "--eval-interval", "60",
                         "--max-eval-examples", "48", "--backend", "eager")
    text = proc.stdout + proc.stderr
    for step in (0, 60, 120):
        assert f"step {step}: accuracy" in text
    summary = harness.summary(out)
    # the planner's choice on one rank with room to spare: no partitioning, said in one line
    assert summary["mode"] == "deepspeed zero-0" and summary["steps"] == 120
    assert "rpt-train: ZeRO stage 0 (no partitioning): predicted" in text
    assert summary["final_loss"] < 0.5 * summary["first_logged_loss"]
    assert summary["best_score"] > 0.2 and summary["best_step"] > 0  # better than the untrained prompt

    backbone = AutoModelForSeq2SeqLM.from_config(t5_config("t5-tiny"))
    init_preset_weights(backbone, seed=42, rank=0)  # the run's default seed: the same weights
    model = _load_peft(backbone, out).eval()
    tokenizer = ByT5Tokenizer()
    inputs = tokenizer(["good day"], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4)
    assert generated.shape[0] == 1


def test_decoder_only_backbone_under_zero3(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    local = str(tmp_path / "gpt2-tiny")
    config = GPT2Config(vocab_size=384, n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(local)
    out = str(tmp_path / "run")
    harness.train("--model", local, "--output-dir", out, *harness.SMALL, "--max-steps", "4",
                  "--eval-interval", "4", "--max-target-length", "4", "--backend", "triton")
    summary = harness.summary(out)
    assert summary["steps"] == 4 and summary["best_step"] in (0, 4)
    assert len(harness.losses(out)) == 4 and all(math.isfinite(x) for x in harness.losses(out))
    model = _load_peft(AutoModelForCausalLM.from_pretrained(local), out)
    assert model.peft_config["default"].task_type == "CAUSAL_LM"
