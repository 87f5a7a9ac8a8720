"""``rpt-train`` that SIGKILLs itself in the middle of its N-th checkpoint save: every rank has
written its files into the temporary folder, nothing is sealed yet. Usage:
``CRASH_AT_SAVE=N crash_during_save.py <rpt-train arguments>`` (also under ``deepspeed``)."""

import os
import signal
import sys

from rpt_fast.train import checkpoint, cli

_seal = checkpoint.seal
_calls = 0


def _crashing_seal(root, tmp, step, *args, **kwargs):
    global _calls
    _calls += 1
    if _calls == int(os.environ["CRASH_AT_SAVE"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return _seal(root, tmp, step, *args, **kwargs)


checkpoint.seal = _crashing_seal

if __name__ == "__main__":
    cli.main(sys.argv[1:])
