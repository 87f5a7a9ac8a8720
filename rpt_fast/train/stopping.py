"""SIGINT (Ctrl-C) and SIGTERM (what Slurm, Kubernetes and the launchers send before they kill a
job) stop a run cleanly: at the next step boundary it writes a checkpoint (with
``--save-interval 0`` too), prints one line with the checkpoint and the command that resumes it,
and exits 130 for SIGINT, 143 for SIGTERM (the shells' 128 + signal number).

A signal may reach one rank only (the ``deepspeed`` launcher forwards SIGTERM to its ranks one
after another; ``kill`` names one process), yet every rank must stop after the same step and
write its part of the checkpoint. So at each step boundary the ranks all-reduce (max) the signal
each has seen: one int, one tiny collective per step, outside every kernel.

SIGINT a second time (Ctrl-C twice) stops at once, without a checkpoint; so does SIGTERM a
second time, but only :data:`REPEAT_GRACE_S` or more after the first: a repeat sooner is the
same stop request sent twice (see there). A checkpoint being written is never abandoned: a stop
at once waits until it is complete. During start-up (until the model is built) a signal
interrupts at once: there is nothing to save yet (:class:`Interrupted`, a
``KeyboardInterrupt``). During the last step, the final evaluation and the export the run
finishes: its final state is checkpointed first.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
import time

import torch

from .errors import reports_errors

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# A second SIGTERM sooner than this after the first does not stop at once. Under Slurm (scancel,
# the time limit) every process of the job step gets SIGTERM, and the deepspeed launcher, on its
# own, sends each rank another one right away: a rank gets two within milliseconds, meant as one
# request to stop with a checkpoint. 10 s is far above that gap on a loaded node and leaves the
# checkpoint time before the SIGKILL that follows (Slurm's KillWait, the deepspeed launcher's
# wait, Kubernetes' grace period: 30 s by default).
REPEAT_GRACE_S = 10.0


def exit_code(signum: int) -> int:
    return 128 + signum


def name(signum: int) -> str:
    return signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """A signal that stops the program at once (outside the steps, or a repeat: see the module);
    ``after_save``: it waited for a checkpoint being written, which is complete."""

    def __init__(self, signum: int, after_save: bool = False):
        super().__init__(name(signum))
        self.signum = signum
        self.after_save = after_save


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
        self._first_seen: dict[int, float] = {}  # each signal's first arrival (time.monotonic)
        self._saving = False  # a checkpoint is being written
        self._deferred = 0  # a stop at once that came while it was

    def _at_once(self, signum: int) -> bool:
        """Whether ``signum`` asks to stop at once: SIGINT again, or SIGTERM again at least
        :data:`REPEAT_GRACE_S` after the first."""
        first = self._first_seen.get(signum)
        if first is None:
            self._first_seen[signum] = time.monotonic()
            return False
        return signum == signal.SIGINT or time.monotonic() - first >= REPEAT_GRACE_S

    def _handle(self, signum, frame):
        if self._at_once(signum):
            if not self._saving:
                raise Interrupted(signum)
            self._deferred = signum
            if reports_errors():  # os.write: print() is not safe inside a signal handler
                os.write(2, f"rpt-train: {name(signum)} again: stopping at once when the checkpoint being written "
                            "is complete\n".encode())
            return
        if not self.signum:
            self.signum = signum
            again = "again" if signum == signal.SIGINT else f"again after {REPEAT_GRACE_S:g} s"
            if reports_errors():
                os.write(2, f"rpt-train: {name(signum)} received: stopping after this step with a checkpoint "
                            f"({name(signum)} {again}: at once, without one)\n".encode())

    @contextlib.contextmanager
    def saving(self, stop_checkpoint: bool = False):
        """Around writing a checkpoint: a stop at once waits until it is complete (an abort
        mid-save would lose it), then stops the run; not after the ``stop_checkpoint``, which
        the run leaves right after anyway (with its one line)."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._deferred and not stop_checkpoint:
            raise Interrupted(self._deferred, after_save=True)

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
