"""``python -m rpt_fast``: the self-check (:mod:`rpt_fast.selfcheck`)."""

import os
import sys

from .selfcheck import main

try:
    sys.exit(main())
except BrokenPipeError:  # the reader left (``| head``): stop quietly, as command-line tools do
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
