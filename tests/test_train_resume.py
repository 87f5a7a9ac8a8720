"""A run SIGKILLed in the middle of a checkpoint save, or stopped by SIGINT or SIGTERM, and
resumed ends exactly like one never interrupted (same data order, RNG streams with dropout on,
optimizer, LR schedule, best result); a damaged checkpoint stops ``--resume`` with an error
naming the file. ``--resume`` takes the run's saved settings: flags that would change what is
trained are refused, a longer run is recorded; a folder without a checkpoint is refused unless
``--resume auto``; a finished run says so."""

import json
import os
import shlex
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

from rpt_fast.train import checkpoint  # noqa: E402
from rpt_fast.train.cli import config_from_args  # noqa: E402

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
    settings = config_from_args(["--no-deepspeed", *harness.SMALL]).to_dict()  # the damaged run's config.json
    (tmp_path / "config.json").write_text(json.dumps({"train": settings}))
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


# One process, plain PyTorch, constant learning rate: fast, and a longer run extends a shorter one.
PLAIN = [*harness.SMALL, "--no-deepspeed", "--backend", "eager", "--prompt-dropout", "0.1", "--lr", "0.1"]


def _one_line(proc, code: int, start: str) -> str:
    lines = proc.stderr.strip().splitlines() if code else proc.stdout.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith(start), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("whole") / "run")
    harness.train("--output-dir", out, *PLAIN, "--max-steps", "8", "--eval-interval", "3")
    return out


@pytest.mark.timeout(300)
def test_resume_takes_the_runs_settings_extends_it_and_says_when_it_is_finished(tmp_path, uninterrupted):
    out = str(tmp_path / "run")
    # a mistyped path does not train from scratch; --resume auto starts the run where there is no checkpoint
    _one_line(harness.train("--output-dir", out, "--resume", *PLAIN, check=False), 2,
              f"rpt-train: error: --resume: nothing to resume in --output-dir {out} (no such folder)")
    harness.train("--output-dir", out, "--resume", "auto", *PLAIN, "--max-steps", "4", "--eval-interval", "2",
                  "--save-interval", "2")
    config = open(os.path.join(out, "config.json")).read()
    # the final state is saved at the last step: the run is finished, not resumable from step 2
    _one_line(harness.train("--output-dir", out, "--resume", "auto"), 0,
              f"rpt-train: the run in {out} is finished (step 4 of 4)")
    _one_line(harness.train("--output-dir", out, "--resume", "--lr", "0.2", check=False), 2,
              f"rpt-train: error: --lr: the run in {out} trains with --lr 0.1, and a resumed run keeps what defines it")
    _one_line(harness.train("--output-dir", out, *PLAIN, check=False), 2,
              f"rpt-train: error: --output-dir: {out} holds a run already (a checkpoint at step 4)")

    # No flag but a longer run: its own settings (lr 0.1, not the default 0.3), steps 5-8.
    harness.train("--output-dir", out, "--resume", "--max-steps", "8", "--eval-interval", "3")
    assert open(os.path.join(out, "config.json")).read() == config  # the first settings, untouched
    with open(os.path.join(out, "resumes.jsonl")) as handle:
        (record,) = [json.loads(line) for line in handle]
    assert record["from_step"] == 4 and record["changes"] == {"max_steps": [4, 8], "eval_interval": [2, 3]}
    assert record["settings"]["lr"] == 0.1 and record["settings"]["max_steps"] == 8
    assert harness.losses(out) == harness.losses(uninterrupted)  # the 8 steps of one run, exactly
    assert torch.equal(harness.prompt(out), harness.prompt(uninterrupted))
    # the next resume starts from the recorded settings: 8 steps, finished
    _one_line(harness.train("--output-dir", out, "--resume"), 0, f"rpt-train: the run in {out} is finished (step 8 of 8)")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, code", [("INT", 130)])  # SIGTERM (143): tests/test_train_multirank.py
def test_a_signal_stops_at_a_step_with_a_checkpoint_and_the_printed_command_resumes_exactly(
        tmp_path, uninterrupted, name, code):
    out = str(tmp_path / "run")
    script = os.path.join(harness.SCRIPTS, "signal_at_step.py")
    stopped = harness.run([sys.executable, script, "--output-dir", out, *PLAIN, "--max-steps", "8", "--eval-interval",
                           "3", "--save-interval", "0"], timeout=240, check=False,
                          extra_env={"SIGNAL_AT_STEP": "5", "SIGNAL": name})
    assert stopped.returncode == code, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    folder = os.path.join(out, "checkpoints", "step-00000005")
    line = stopped.stderr.strip().splitlines()[-1]
    assert line == (f"rpt-train: stopped by SIG{name} after step 5 of 8: checkpoint {folder}; resume: "
                    f"rpt-train --output-dir {out} --resume")
    assert checkpoint.latest(os.path.join(out, "checkpoints")) == folder  # with --save-interval 0 too
    assert not os.path.exists(os.path.join(out, "summary.json"))

    command = shlex.split(line.split("resume: ", 1)[1])
    assert command[0] == "rpt-train"
    resumed = harness.train(*command[1:])
    assert "resumed from step 5" in resumed.stdout + resumed.stderr
    assert torch.equal(harness.prompt(out), harness.prompt(uninterrupted))
    assert harness.losses(out) == harness.losses(uninterrupted)
    a, b = harness.summary(uninterrupted), harness.summary(out)
    assert (b["best_step"], b["best_metrics"]) == (a["best_step"], a["best_metrics"])
