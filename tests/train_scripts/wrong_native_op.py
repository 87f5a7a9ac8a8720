"""``rpt-train`` whose native shared op computes 1% off, so its self-check fails: on every rank,
or with ``WRONG_RANKS=1,3`` on those ranks only (as the launcher numbers them). Usage:
``wrong_native_op.py <rpt-train arguments>``."""

import os
import sys

import rpt_fast.ops.native as native
from rpt_fast.train import cli

_rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0"))
if os.environ.get("WRONG_RANKS") is None or _rank in os.environ["WRONG_RANKS"].split(","):
    _right = native.residual_mlp
    native.residual_mlp = lambda *args: _right(*args) * 1.01

if __name__ == "__main__":
    sys.argv[0] = "rpt-train"
    cli.main(sys.argv[1:])
