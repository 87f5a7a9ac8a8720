"""``rpt-train`` whose rank 0 (as the launcher numbers it) raises ``OSError`` while sealing its
first checkpoint: a failure in rank-0-only code. Usage: ``fail_on_main.py <rpt-train arguments>``."""

import os
import sys

from rpt_fast.train import checkpoint, cli


def _failing_seal(root, tmp, step, *args, **kwargs):
    raise OSError(28, "No space left on device (injected)")


if os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK")) == "0":
    checkpoint.seal = _failing_seal

if __name__ == "__main__":
    cli.main(sys.argv[1:])
