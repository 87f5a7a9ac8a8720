"""What a finished run leaves and says, from the command line: a warning when no evaluation beat
step 0 (and which prompt was exported), ``--save-total-limit``, files readable like any other
(0644 under the usual umask), the adapter's base model and model card, and summaries after a
resume that count this process's steps and time next to the whole run's; TensorBoard scalars
that match ``metrics.jsonl``."""

import json
import os
import stat
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402
from cli_run import rpt_train  # noqa: E402

pytestmark = pytest.mark.timeout(300)

# Tiny and fast, one process; a learning rate too small to change any prediction.
RUN = ["--no-deepspeed", "--backend", "eager", "--num-tokens", "4", "--bottleneck", "8",
       "--max-train-examples", "64", "--batch-size", "4", "--max-eval-examples", "8", "--log-interval", "1",
       "--no-progress", "--lr", "1e-9", "--eval-interval", "5", "--save-interval", "1", "--save-total-limit", "2",
       "--report-to", "tensorboard"]


def _summary(out):
    with open(os.path.join(out, "summary.json")) as handle:
        return json.load(handle)


def _records(out, kind):
    with open(os.path.join(out, "metrics.jsonl")) as handle:
        return [r for r in map(json.loads, handle) if r["type"] == kind]


def _tensorboard_scalars(out, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(out, "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def _assert_tensorboard_matches_the_log(out):
    for kind, key in (("train", "loss"), ("train", "lr"), ("eval", "accuracy")):
        expected = [(r["step"], r[key]) for r in _records(out, kind)]
        got = _tensorboard_scalars(out, f"{kind}/{key}")
        assert [step for step, _ in got] == [step for step, _ in expected], (kind, key)
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), (kind, key)


def test_outputs_are_honest_before_and_after_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    out = str(tmp_path / "run")
    first = rpt_train(tmp_path, *RUN, "--max-steps", "5", "--output-dir", out)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = _summary(out)
    # Evaluations at steps 0 and 5 score the same: the exported prompt is step 0's, and it says so.
    assert summary["best_step"] == summary["exported_step"] == 0
    assert summary["warnings"] and "untrained step-0 prompt" in summary["warnings"][0]
    assert "warning: no evaluation scored above the first one (step 0" in first.stdout
    with open(os.path.join(out, "peft-adapter", "README.md")) as handle:
        assert "**Warning:** no evaluation scored above" in handle.read()

    # --save-total-limit 2: checkpoints at steps 1-5 (the last one with the final state), the newest two kept.
    root = os.path.join(out, "checkpoints")
    assert sorted(e for e in os.listdir(root) if e.startswith("step-")) == ["step-00000004", "step-00000005"]

    # Every file as readable as config.json (safetensors alone used to be 0600).
    reference = stat.S_IMODE(os.stat(os.path.join(out, "config.json")).st_mode)
    for path in ("prompt.safetensors", "peft-adapter/adapter_model.safetensors", "peft-adapter/adapter_config.json",
                 "peft-adapter/README.md", "checkpoints/step-00000004/best_trainable.safetensors"):
        assert stat.S_IMODE(os.stat(os.path.join(out, path)).st_mode) == reference, path

    _assert_tensorboard_matches_the_log(out)

    harness.rewind(out, 4)  # as if killed after logging step 5, before its checkpoint
    resumed = rpt_train(tmp_path, *RUN, "--max-steps", "7", "--output-dir", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _summary(out)
    assert after["resumed_from_step"] == 4 and after["steps"] == 7
    assert after["this_run"]["steps"] == 3
    assert after["train_time_s"] > after["this_run"]["train_time_s"]  # includes steps 1-4 of the first process
    assert after["first_logged_loss"] == summary["first_logged_loss"]  # the whole run's first log
    assert after["this_run"]["first_logged_loss"] != summary["first_logged_loss"]
    assert "done: steps 5-7 (3 steps) in" in resumed.stdout and "whole run 7 steps in" in resumed.stdout
    _assert_tensorboard_matches_the_log(out)  # step 5 of the first process purged, written once again
