"""``python -m rpt_fast``: the self-check (:mod:`rpt_fast.selfcheck`)."""

import sys

from .selfcheck import main

sys.exit(main())
