"""ResidualPromptModel under ``transformers.Trainer`` (rpt_fast.train.hf.PromptTrainer), with and
without ``TrainingArguments(deepspeed=...)`` (ZeRO-3, one CPU rank), on T5 and on a decoder-only
backbone (tiny-llama, data from ``prompt_dataset``): it trains, its checkpoints hold only the
trainable prompt encoder, and resuming from one ends exactly where the uninterrupted run ends;
ZeRO-3 trains like the plain Trainer."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
from cli_run import REPO, env  # noqa: E402

pytestmark = pytest.mark.timeout(300)
SCRIPT = os.path.join(REPO, "tests", "train_scripts", "hf_trainer_run.py")


def _run(out, *args):
    proc = subprocess.run([sys.executable, SCRIPT, str(out), *args], env=env(), capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(os.path.join(out, "losses.json")) as handle:
        losses = list(json.load(handle).values())
    return load_file(os.path.join(out, "whole.safetensors")), load_file(os.path.join(out, "resumed.safetensors")), losses


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    return out, *_run(out)


@pytest.fixture(scope="module")
def decoder_plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("decoder")
    return out, *_run(out, "--model", "tiny-llama")


@pytest.mark.parametrize("run", ["plain", "decoder_plain"])
def test_trainer_checkpoints_hold_the_prompt_encoder_and_resume_exactly(run, request):
    out, whole, resumed, (losses, resumed_losses) = request.getfixturevalue(run)
    assert losses[-1] < losses[0] and len(losses) == 4  # it trains
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    assert resumed_losses == losses
    checkpoint = os.path.join(out, "whole", "checkpoint-2", "model.safetensors")
    saved = load_file(checkpoint)
    assert sorted(saved) == sorted(f"prompt_encoder.{name}" for name in whole)  # no frozen backbone
    assert stat.S_IMODE(os.stat(checkpoint).st_mode) == stat.S_IMODE(
        os.stat(os.path.join(out, "whole", "checkpoint-2", "trainer_state.json")).st_mode)


@pytest.mark.parametrize("run", ["plain", "decoder_plain"])
def test_trainer_with_a_deepspeed_zero3_config_trains_and_resumes_like_the_plain_one(run, request, tmp_path):
    _, reference, _, (reference_losses, _) = request.getfixturevalue(run)
    model = ["--model", "tiny-llama"] if run == "decoder_plain" else []
    whole, resumed, (losses, resumed_losses) = _run(tmp_path, "--zero-stage", "3", *model)
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
        torch.testing.assert_close(whole[name], reference[name], rtol=1e-4, atol=1e-5)
    assert resumed_losses == losses
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(reference_losses), rtol=1e-5, atol=1e-5)
