"""The demo command end to end (loss falls, score rises, exports written), the exported PEFT
adapter loading with the real ``peft`` package, and the decoder-only path under ZeRO-3."""

import json
import math
import os
import re
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def _check_prompt(model, out):
    loaded = model.get_prompt_embedding_to_save(adapter_name="default")
    torch.testing.assert_close(loaded, harness.prompt(out), rtol=0, atol=0)


def _load_peft(backbone, out):
    from peft import PeftModel

    summary = harness.summary(out)
    assert os.path.isfile(summary["exports"]["prompt"])
    model = PeftModel.from_pretrained(backbone, summary["exports"]["peft"])
    _check_prompt(model, out)
    return model


def _readme_reload_snippet() -> str:
    """The README's code block that reloads the demo's adapter and scores it."""
    with open(os.path.join(harness.REPO, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    return next(b for b in blocks if "build_backbone" in b and "PeftModel" in b)


def test_demo_command_learns_and_exports_an_adapter_the_readme_reloads(tmp_path):
    out = str(tmp_path / "demo")
    # The README's first command, shortened (and on the eager backend: no compiler run in CI).
    proc = harness.train("--output-dir", out, "--max-steps", "120", "--eval-interval", "60",
                         "--max-eval-examples", "48", "--backend", "eager")
    text = proc.stdout + proc.stderr
    for step in (0, 60, 120):
        assert f"step {step}: accuracy" in text
    assert "warning" not in text
    summary = harness.summary(out)
    # the planner's choice on one rank with room to spare: no partitioning, said in one line
    assert summary["mode"] == "deepspeed zero-0" and summary["steps"] == 120
    assert "rpt-train: ZeRO stage 0 (no partitioning): predicted" in text
    assert summary["final_loss"] < 0.5 * summary["first_logged_loss"]
    assert summary["best_score"] > 0.2 and summary["best_step"] > 0  # better than the untrained prompt
    assert summary["warnings"] == [] and summary["this_run"]["steps"] == 120

    adapter = summary["exports"]["peft"]
    with open(os.path.join(adapter, "adapter_config.json")) as handle:
        assert json.load(handle)["base_model_name_or_path"] == "t5-tiny"
    with open(os.path.join(adapter, "README.md")) as handle:
        card = handle.read()
    assert "task: `synthetic`" in card and f"accuracy {summary['best_score']:.3f}" in card
    assert "steps: 120" in card and "rpt-train --output-dir" in card

    # The README's lines, on this run's adapter and its 48-example evaluation subset.
    code = _readme_reload_snippet().replace("rpt-runs/RUN/peft-adapter", adapter)
    code = code.replace('get_task("synthetic", seed=42)', 'get_task("synthetic", seed=42, max_eval=48)')
    code = code.replace("print(task.metrics(predictions, task.eval))", "scores = task.metrics(predictions, task.eval)")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the documented snippet itself
    _check_prompt(namespace["model"], out)
    assert abs(namespace["scores"]["accuracy"] - summary["best_score"]) <= 0.05, (namespace["scores"], summary)


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
    with open(os.path.join(summary["exports"]["peft"], "adapter_config.json")) as handle:
        assert json.load(handle)["base_model_name_or_path"] == os.path.abspath(local)
    model = _load_peft(AutoModelForCausalLM.from_pretrained(local), out)
    assert model.peft_config["default"].task_type == "CAUSAL_LM"
