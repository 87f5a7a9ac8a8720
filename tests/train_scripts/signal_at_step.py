"""``rpt-train`` that, during training step ``SIGNAL_AT_STEP`` (1-based), sends ``SIGNAL`` (INT
or TERM) to itself, or with ``SIGNAL_TO=parent`` to the process that started it (the
``deepspeed`` launcher, which forwards it to every rank), and then waits until the signal has
reached it. Only the rank ``SIGNAL_RANK`` (default 0, as the launcher numbers it) sends.
``SIGNAL_TIMES=N`` sends it N times in a row (Slurm and the launcher both send SIGTERM);
``SIGNAL_IN_SAVE=1`` sends from inside that step's checkpoint save instead (rank 0, every
rank's files written, nothing sealed yet). Usage: ``SIGNAL_AT_STEP=5 SIGNAL=INT
signal_at_step.py <rpt-train arguments>`` (also under ``deepspeed``)."""

import os
import signal
import sys
import time

from rpt_fast.train import checkpoint, cli, stopping, trainer

_train_step = trainer.Run.train_step
_seal = checkpoint.seal
_rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0"))
_received = []
_handle = stopping.StopRequest._handle


def _recording_handle(self, signum, frame):
    _received.append(signum)
    return _handle(self, signum, frame)


def _send() -> None:
    if _rank != os.environ.get("SIGNAL_RANK", "0"):
        return
    signum = getattr(signal, "SIG" + os.environ["SIGNAL"])
    times = int(os.environ.get("SIGNAL_TIMES", "1"))
    for _ in range(times):
        os.kill(os.getppid() if os.environ.get("SIGNAL_TO") == "parent" else os.getpid(), signum)
    deadline = time.monotonic() + 60
    while len(_received) < times and time.monotonic() < deadline:
        time.sleep(0.05)


def _signalling_step(self, step):
    loss = _train_step(self, step)
    if step + 1 == int(os.environ["SIGNAL_AT_STEP"]) and not os.environ.get("SIGNAL_IN_SAVE"):
        _send()
    return loss


def _signalling_seal(root, tmp, step, *args, **kwargs):
    if step == int(os.environ["SIGNAL_AT_STEP"]) and os.environ.get("SIGNAL_IN_SAVE"):
        _send()
    return _seal(root, tmp, step, *args, **kwargs)


trainer.Run.train_step = _signalling_step
checkpoint.seal = _signalling_seal
stopping.StopRequest._handle = _recording_handle

if __name__ == "__main__":
    cli.main(sys.argv[1:])
