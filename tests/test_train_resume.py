"""A run SIGKILLed in the middle of a checkpoint save and resumed ends exactly like one never
interrupted (same data order, RNG streams with dropout on, optimizer, LR schedule, best
result); a damaged checkpoint stops ``--resume`` with an error naming the file."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

from rpt_fast.train import checkpoint  # noqa: E402

RUN = [*harness.SMALL, "--max-steps", "12", "--save-interval", "4", "--eval-interval", "6",
       "--prompt-dropout", "0.1", "--backend", "triton"]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("mode", [["--zero-stage", "3"], ["--no-deepspeed"]], ids=["zero3", "pytorch"])
def test_killed_mid_save_and_resumed_equals_uninterrupted(tmp_path, mode):
    run = [*RUN, *mode]
    whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
    harness.train("--output-dir", whole, *run)
    crash = os.path.join(harness.SCRIPTS, "crash_during_save.py")
    killed = harness.run([sys.executable, crash, "--output-dir", broken, *run], timeout=240, check=False,
                         extra_env={"CRASH_AT_SAVE": "2"})
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL while saving step 8
    root = os.path.join(broken, "checkpoints")
    assert checkpoint.latest(root) == os.path.join(root, "step-00000004")  # step 8 never sealed
    assert not os.path.exists(os.path.join(broken, "prompt.safetensors"))

    resumed = harness.train("--output-dir", broken, "--resume", *run)
    assert "resumed from step 4" in resumed.stdout + resumed.stderr
    assert torch.equal(harness.prompt(broken), harness.prompt(whole))
    assert harness.losses(broken) == harness.losses(whole)  # the log reads as one run, too
    a, b = harness.summary(whole), harness.summary(broken)
    assert (b["best_step"], b["best_metrics"], b["resumed_from_step"]) == (a["best_step"], a["best_metrics"], 4)


@pytest.mark.timeout(120)
def test_resume_from_a_corrupt_checkpoint_names_the_file(tmp_path):
    root = tmp_path / "checkpoints"
    tmp = checkpoint.begin(str(root), 4)
    with open(os.path.join(tmp, "plain_state.pt"), "wb") as handle:
        handle.write(b"0123456789")
    folder = checkpoint.seal(str(root), tmp, 4)
    with open(os.path.join(folder, "plain_state.pt"), "r+b") as handle:
        handle.truncate(4)
    proc = harness.train("--no-deepspeed", "--output-dir", str(tmp_path), "--resume", *harness.SMALL,
                         timeout=120, check=False)
    assert proc.returncode == 2
    assert "plain_state.pt is truncated" in proc.stderr
