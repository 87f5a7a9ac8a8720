"""The official recipe's flags end to end on CPU: gradient accumulation gives the update of one
whole batch (plain PyTorch, and DeepSpeed ZeRO-3 on two CPU ranks); plain prompt tuning
(``--reparam none``) trains, checkpoints, resumes and exports under ZeRO-3 like the plain mode;
few-shot training with the official val/test halves scores the test half once at the end."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

# No dropout (micro-batches and ranks draw other masks); a decaying LR and clipping, so a
# scheduler or clipping applied per micro-batch instead of per step would show.
BASE = ["--num-tokens", "8", "--bottleneck", "16", "--max-train-examples", "64", "--max-eval-examples", "8",
        "--log-interval", "1", "--no-progress", "--eval-interval", "0", "--backbone-dropout", "0", "--seed", "7",
        "--max-steps", "3", "--batch-size", "8", "--lr-scheduler", "linear", "--warmup-steps", "1",
        "--max-grad-norm", "1.0"]
SCRIPT = os.path.join(harness.SCRIPTS, "rpt_train.py")
pytestmark = pytest.mark.timeout(420)


def _assert_same_training(out, reference):
    ref_losses = harness.losses(reference)
    assert len(ref_losses) == 3 and ref_losses[-1] < ref_losses[0]
    torch.testing.assert_close(torch.tensor(harness.losses(out)), torch.tensor(ref_losses), rtol=1e-5, atol=0)
    expected = harness.prompt(reference)
    assert (harness.prompt(out) - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("one-batch"))
    harness.train("--no-deepspeed", "--output-dir", out, *BASE)
    return out


def test_accumulation_gives_the_update_of_one_batch(one_batch, tmp_path):
    out = str(tmp_path / "accum")
    harness.train("--no-deepspeed", "--gradient-accumulation-steps", "2", "--output-dir", out, *BASE)
    _assert_same_training(out, one_batch)


def test_accumulation_under_zero3_on_two_ranks_gives_the_update_of_one_batch(one_batch, tmp_path):
    out = str(tmp_path / "zero3-accum")
    # 8 = 2 ranks x 2 micro-batches x 2 examples; DeepSpeed's own 1/GAS scaling must not apply twice.
    harness.launch(2, SCRIPT, "--zero-stage", "3", "--gradient-accumulation-steps", "2", "--output-dir", out, *BASE)
    _assert_same_training(out, one_batch)


def test_plain_prompt_tuning_under_zero3_matches_pytorch_and_resumes(tmp_path):
    args = [*BASE, "--reparam", "none", "--save-interval", "2", "--save-total-limit", "2"]
    reference, out = str(tmp_path / "plain"), str(tmp_path / "zero3")
    harness.train("--no-deepspeed", "--output-dir", reference, *args)
    harness.train("--zero-stage", "3", "--output-dir", out, *args)
    _assert_same_training(out, reference)
    harness.rewind(out, 2)  # as if killed after step 2's checkpoint
    harness.train("--zero-stage", "3", "--output-dir", out, "--resume", *args)
    _assert_same_training(out, reference)
    assert harness.summary(out)["resumed_from_step"] == 2
    with open(os.path.join(out, "config.json")) as handle:
        assert json.load(handle)["train"]["reparam"] == "none"


def test_few_shot_with_official_halves_scores_the_test_half_once(tmp_path):
    out = str(tmp_path / "fewshot")
    harness.train("--no-deepspeed", "--output-dir", out, *BASE, "--few-shot", "20", "--eval-split", "halves",
                  "--eval-interval", "3", "--no-layer-norm", "--activation", "tanh", "--mlp-lr", "0.01")
    summary = harness.summary(out)
    assert set(summary["test_metrics"]) == {"accuracy"}
    with open(os.path.join(out, "metrics.jsonl")) as handle:
        records = [r for r in map(json.loads, handle) if r["type"] == "test"]
    assert len(records) == 1 and records[0]["step"] == summary["best_step"]


def test_record_trains_and_reports_the_official_scores(tmp_path):
    data = tmp_path / "ReCoRD"
    data.mkdir()
    text = "Obama met Merkel in Berlin."
    records = [{"idx": i, "passage": {"text": text, "entities": [{"start": 0, "end": 4}, {"start": 10, "end": 15}]},
                "qas": [{"query": f"@placeholder spoke {i}.", "idx": i,
                         "answers": [{"start": 0, "end": 4, "text": "Obama"}]}]} for i in range(8)]
    for name in ("train.jsonl", "val.jsonl"):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    out = str(tmp_path / "run")
    harness.train("--no-deepspeed", "--output-dir", out, *BASE, "--task", "record", "--data-dir", str(data),
                  "--eval-interval", "3", "--max-new-tokens", "6", "--max-input-length", "64")
    summary = harness.summary(out)
    assert summary["primary_metric"] == "score" and set(summary["best_metrics"]) == {"em", "f1", "score"}
