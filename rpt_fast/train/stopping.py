"""SIGINT (Ctrl-C) and SIGTERM (what Slurm, Kubernetes and the launchers send before they kill a
job) stop a run cleanly: at the next step boundary it writes a checkpoint (with
``--save-interval 0`` too), prints one line with the checkpoint and the command that resumes it,
and exits 130 for SIGINT, 143 for SIGTERM (the shells' 128 + signal number).

A signal may reach one rank only (the ``deepspeed`` launcher forwards SIGTERM to its ranks one
after another; ``kill`` names one process), yet every rank must stop after the same step and
write its part of the checkpoint. So at each step boundary the ranks all-reduce (max) the signal
each has seen: one int, one tiny collective per step, outside every kernel.

The same signal a second time stops at once, without a checkpoint. During start-up (until the
model is built) a signal interrupts at once: there is nothing to save yet (:class:`Interrupted`,
a ``KeyboardInterrupt``). During the last step, the final evaluation and the export the run
finishes: its final state is checkpointed first.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading

import torch

from .errors import reports_errors

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    return 128 + signum


def name(signum: int) -> str:
    return signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """A signal that stops the program at once (outside the steps, or the same one twice)."""

    def __init__(self, signum: int):
        super().__init__(name(signum))
        self.signum = signum


class Stopped(Exception):
    """The run stopped at a step boundary on a signal, after writing its checkpoint; ``str()``
    is the one line that says where it is and how to resume."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def _raise(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def _handlers(handler):
    if threading.current_thread() is not threading.main_thread():
        yield  # Python delivers signals to the main thread only: nothing to install
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def interrupts():
    """Context manager: SIGINT and SIGTERM raise :class:`Interrupted` (the command around the run)."""
    return _handlers(_raise)


class StopRequest:
    """Within the training steps: a signal asks the loop to stop at its next step boundary."""

    def __init__(self, info):
        self.info = info
        self.signum = 0  # the first signal this process received

    def _handle(self, signum, frame):
        if signum == self.signum:
            raise Interrupted(signum)
        if not self.signum:
            self.signum = signum
            if reports_errors():  # os.write: print() is not safe inside a signal handler
                os.write(2, f"rpt-train: {name(signum)} received: stopping after this step with a checkpoint "
                            f"({name(signum)} again: at once, without one)\n".encode())

    def agreed(self) -> int:
        """The signal any rank received (0: none): the same answer on every rank; collective."""
        if self.info.world_size == 1:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int32, device=self.info.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def stopped(self, signum: int, step: int, total: int, folder: str, out: str, world_size: int) -> Stopped:
        ranks = f" (with the same launcher and {world_size} ranks)" if world_size > 1 else ""
        return Stopped(signum, f"stopped by {name(signum)} after step {step} of {total}: checkpoint {folder}; "
                               f"resume: rpt-train --output-dir {shlex.quote(out)} --resume{ranks}")


@contextlib.contextmanager
def stop_requests(info):
    """Around the training steps: SIGINT and SIGTERM become a :class:`StopRequest`."""
    request = StopRequest(info)
    with _handlers(request._handle):
        yield request
