"""``rpt-train`` on decoder-only backbones end to end: the tiny-llama preset learns the synthetic
task (generation evaluation); a local checkpoint folder (Qwen2 with q/k/v biases, a tied-head
Llama) with its own tokenizer and chat template trains on JSONL data and its PEFT adapter,
reloaded by stock PEFT, gives the trained model's logits; ZeRO-3 with CPU offload on two ranks
trains and evaluates like one plain rank; a run killed mid-save and resumed ends like an
uninterrupted one."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import decoder_models  # noqa: E402
import harness  # noqa: E402

from rpt_fast.train import checkpoint  # noqa: E402

LLAMA = [*harness.SMALL, "--model", "tiny-llama", "--backend", "eager"]


@pytest.mark.timeout(300)
def test_tiny_llama_learns_the_synthetic_task(tmp_path):
    out = str(tmp_path / "run")
    proc = harness.train("--output-dir", out, "--model", "tiny-llama", "--num-tokens", "20", "--batch-size", "16",
                         "--max-steps", "150", "--eval-interval", "75", "--max-eval-examples", "48",
                         "--backend", "eager", "--no-progress")
    text = proc.stdout + proc.stderr
    for step in (0, 75, 150):
        assert f"step {step}: accuracy" in text
    summary = harness.summary(out)
    assert summary["final_loss"] < 0.5 * summary["first_logged_loss"]
    assert summary["best_score"] > 0.3 and summary["best_step"] > 0 and summary["warnings"] == []
    with open(os.path.join(summary["exports"]["peft"], "adapter_config.json")) as handle:
        config = json.load(handle)
    assert config["task_type"] == "CAUSAL_LM" and config["base_model_name_or_path"] == "tiny-llama"
    with open(os.path.join(summary["exports"]["peft"], "README.md")) as handle:
        assert "- inputs: the input followed by a newline" in handle.read()  # how to feed the adapter


def _jsonl(folder, name, rows):
    with open(os.path.join(folder, name), "w") as handle:
        handle.writelines(json.dumps({"input": i, "target": t}) + "\n" for i, t in rows)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["qwen2", "tied_llama"])
def test_local_checkpoint_with_chat_template_trains_and_reloads_in_peft(kind, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rpt_fast.train.config import TrainConfig
    from rpt_fast.train.data import collate_train
    from rpt_fast.train.distributed import init_distributed
    from rpt_fast.train.export import export_prompt
    from rpt_fast.train.trainer import Run

    tokenizer = decoder_models.byte_tokenizer(chat_template=decoder_models.CHAT_TEMPLATE)
    folder = decoder_models.save_checkpoint(getattr(decoder_models, kind)(), str(tmp_path / "ckpt"), tokenizer)
    data = tmp_path / "data"
    data.mkdir()
    _jsonl(data, "train.jsonl", [(f"is {w} good?", "yes" if w[0] < "m" else "no") for w in
                                 ("apple", "kiwi", "zebra", "pear", "fig", "plum", "date", "yam")])
    _jsonl(data, "val.jsonl", [("is lime good?", "yes"), ("is nut good?", "no")])
    cfg = TrainConfig(model=folder, task="jsonl", data_dir=str(data), chat_template=True, deepspeed=False,
                      num_tokens=4, bottleneck=16, batch_size=4, max_steps=3, eval_interval=0, backend="eager",
                      output_dir=str(tmp_path / "out"), progress=False).validate()
    info = init_distributed(False)
    try:
        run = Run(cfg, info)
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": "is lime good?"}], tokenize=False,
                                                 add_generation_prompt=True)
        assert tokenizer.decode(run.eval_data[0].prompt_ids) == rendered  # the checkpoint's own tokenizer
        losses = [run.train_step(step).item() for step in range(3)]
        assert losses[-1] < losses[0]
        paths = export_prompt(run.model, run.out, info, base_model=folder)
    finally:
        torch.set_flush_denormal(False)  # Run sets it for CPU training
    run.model.eval()
    batch = collate_train(run.eval_data + run.train_data[:2], tokenizer.pad_token_id)
    with torch.no_grad():
        trained = run.model(**batch)  # P' = MLP(P) + P from the trained P and MLP
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), paths["peft"]).eval()
        reloaded = loaded(**batch)
    torch.testing.assert_close(reloaded.logits, trained.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reloaded.loss, trained.loss, rtol=1e-5, atol=1e-5)


@pytest.mark.timeout(420)
def test_zero3_offload_on_two_ranks_trains_and_evaluates_like_one_plain_rank(tmp_path):
    parity = [*LLAMA, "--max-steps", "4", "--eval-interval", "4", "--max-eval-examples", "9", "--seed", "7"]
    plain, zero3 = str(tmp_path / "plain"), str(tmp_path / "zero3")
    harness.train("--no-deepspeed", "--output-dir", plain, *parity)
    tight = tmp_path / "ds.json"  # partition every parameter, keep nothing gathered ahead of use
    tight.write_text(json.dumps({"zero_optimization": {
        "stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": 1000,
        "stage3_prefetch_bucket_size": 0, "stage3_max_reuse_distance": 0}}))
    harness.launch(2, os.path.join(harness.SCRIPTS, "zero3_probe.py"), "--zero-stage", "3", "--offload-param", "cpu",
                   "--deepspeed-config", str(tight), "--output-dir", zero3, *parity)
    reference = harness.losses(plain)
    assert len(reference) == 4 and reference[-1] < reference[0]
    torch.testing.assert_close(torch.tensor(harness.losses(zero3)), torch.tensor(reference), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(harness.prompt(zero3), harness.prompt(plain), rtol=1e-5, atol=2e-5)
    a, b = harness.summary(plain), harness.summary(zero3)
    assert b["world_size"] == 2 and b["mode"] == "deepspeed zero-3"
    assert a["best_metrics"] == b["best_metrics"] and a["best_step"] == b["best_step"]  # generation, synced ranks
    for rank in range(2):
        with open(os.path.join(zero3, f"probe-rank{rank}.json")) as handle:
            probe = json.load(handle)
        assert 0.4 < probe["stored"] / probe["total"] < 0.6, probe  # each rank holds about half
        assert 0 < probe["peak_forward"] < 0.5 * probe["total"], probe


@pytest.mark.timeout(420)
def test_killed_mid_save_and_resumed_equals_uninterrupted(tmp_path):
    run = [*LLAMA, "--zero-stage", "3", "--max-steps", "8", "--save-interval", "3", "--eval-interval", "4",
           "--eval-mode", "likelihood", "--prompt-dropout", "0.1"]
    whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
    harness.train("--output-dir", whole, *run)
    killed = harness.run([sys.executable, os.path.join(harness.SCRIPTS, "crash_during_save.py"), "--output-dir",
                          broken, *run], timeout=240, check=False, extra_env={"CRASH_AT_SAVE": "2"})
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL while saving step 6
    root = os.path.join(broken, "checkpoints")
    assert checkpoint.latest(root) == os.path.join(root, "step-00000003")
    resumed = harness.train("--output-dir", broken, "--resume", *run)
    assert "resumed from step 3" in resumed.stdout + resumed.stderr
    assert torch.equal(harness.prompt(broken), harness.prompt(whole))
    assert harness.losses(broken) == harness.losses(whole)
    a, b = harness.summary(whole), harness.summary(broken)
    assert (b["best_step"], b["best_metrics"], b["resumed_from_step"]) == (a["best_step"], a["best_metrics"], 3)
