"""Repeated stop signals (:mod:`rpt_fast.train.stopping`): SIGTERM twice within
``REPEAT_GRACE_S`` (Slurm signals every process of the step, the ``deepspeed`` launcher each rank
once more) still stops with a checkpoint; SIGINT twice (Ctrl-C twice) stops at once; a stop at
once never abandons a checkpoint half written. Signals go to this process (``raise_signal``
runs the handler before it returns) or to a real ``rpt-train`` in one process."""

import contextlib
import os
import signal
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

from rpt_fast.train import checkpoint, stopping  # noqa: E402
from rpt_fast.train.distributed import DistInfo  # noqa: E402

ONE = DistInfo(0, 1, 0, torch.device("cpu"))


@contextlib.contextmanager
def _requests():
    """The training steps' handlers, in this process; stopping at once where a test does not
    expect it fails the test (an ``Interrupted`` is a KeyboardInterrupt: it would end the session)."""
    try:
        with stopping.stop_requests(ONE) as request:
            yield request
    except stopping.Interrupted as exc:
        pytest.fail(f"stopped at once by {stopping.name(exc.signum)}")


def test_sigterm_again_within_the_grace_period_still_stops_with_a_checkpoint():
    with _requests() as request:
        for _ in range(3):
            signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C under the launcher: SIGINT, then its SIGTERM
    assert request.agreed() == signal.SIGTERM


def test_sigterm_again_after_the_grace_period_stops_at_once(monkeypatch):
    monkeypatch.setattr(stopping, "REPEAT_GRACE_S", 0.0)
    with _requests():
        signal.raise_signal(signal.SIGTERM)
        with pytest.raises(stopping.Interrupted) as raised:
            signal.raise_signal(signal.SIGTERM)
    assert raised.value.signum == signal.SIGTERM


def test_sigint_again_stops_at_once_even_after_a_sigterm():
    with _requests() as request:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(stopping.Interrupted) as raised:
            signal.raise_signal(signal.SIGINT)
    assert raised.value.signum == signal.SIGINT and request.agreed() == signal.SIGTERM


@pytest.mark.parametrize("stop_checkpoint", [False, True])
def test_a_stop_at_once_waits_for_the_checkpoint_being_written(stop_checkpoint):
    written = []
    # then it stops at once; after the stop's own checkpoint the run leaves with its line anyway
    then = contextlib.nullcontext() if stop_checkpoint else pytest.raises(stopping.Interrupted)
    with _requests() as request, then as raised:
        with request.saving(stop_checkpoint):
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            written.append("the rest of the checkpoint")
    assert written and request.agreed() == signal.SIGINT
    assert stop_checkpoint or raised.value.after_save


# rpt-train in one process, a signal during step 3 of 6, --save-interval 0 (or 2: a save at step 2)
RUN = [*harness.SMALL, "--no-deepspeed", "--backend", "eager", "--max-steps", "6", "--eval-interval", "0"]


def _signalled(tmp_path, signal_name, times, save_interval="0", in_save=False, at_step=3):
    out = str(tmp_path / "run")
    script = os.path.join(harness.SCRIPTS, "signal_at_step.py")
    extra = {"SIGNAL_AT_STEP": str(at_step), "SIGNAL": signal_name, "SIGNAL_TIMES": str(times)}
    if in_save:
        extra["SIGNAL_IN_SAVE"] = "1"
    proc = harness.run([sys.executable, script, "--output-dir", out, *RUN, "--save-interval", save_interval],
                       timeout=240, check=False, extra_env=extra)
    return out, proc


@pytest.mark.timeout(300)
def test_sigterm_twice_at_once_stops_after_the_step_with_its_checkpoint(tmp_path):
    out, proc = _signalled(tmp_path, "TERM", 2)
    assert proc.returncode == 143 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    folder = os.path.join(out, "checkpoints", "step-00000003")
    assert proc.stderr.strip().splitlines()[-1].startswith(f"rpt-train: stopped by SIGTERM after step 3 of 6: "
                                                           f"checkpoint {folder}; resume: ")
    assert "(SIGTERM again after 10 s: at once, without one)" in proc.stderr
    assert checkpoint.latest(os.path.join(out, "checkpoints")) == folder


@pytest.mark.timeout(300)
def test_sigint_twice_during_a_save_stops_once_the_checkpoint_is_complete(tmp_path):
    out, proc = _signalled(tmp_path, "INT", 2, save_interval="2", in_save=True, at_step=2)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "SIGINT again: stopping at once when the checkpoint being written is complete" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "rpt-train: stopped by SIGINT at once, once the checkpoint being written was complete")
    root = os.path.join(out, "checkpoints")
    assert checkpoint.latest(root) == os.path.join(root, "step-00000002")  # sealed, and verified
