"""User errors, named by the command-line flag they concern, and the one place that turns them
into ``rpt-train: error: --flag: message`` and exit code 2 (see :mod:`cli`).

Settings checks raise :class:`UsageError` with a :class:`~rpt_fast.train.config.TrainConfig`
field name or a flag; the flag is derived from the field (``num_tokens`` -> ``--num-tokens``),
so a new field needs no table entry. Older checks that raise ``ValueError("field: ...")`` are
recognized too (:func:`rpt_fast.train.config.as_usage_error`, beside the fields it knows), so
every settings check reads the same on the command line. This module imports nothing of the
package: everything else may import it.
"""

from __future__ import annotations

import os
import sys

DEBUG_ENV = "RPT_DEBUG"  # RPT_DEBUG=1: show the traceback of a user error as well


def flag_name(name: str) -> str:
    """``num_tokens`` -> ``--num-tokens``; a name that already is a flag is kept."""
    return name if name.startswith("-") else "--" + name.replace("_", "-")


class UsageError(ValueError):
    """A setting the user gave is wrong (or a file it names is): ``str()`` reads
    ``--flag: what was expected, what was given``."""

    def __init__(self, name: str, message: str):
        self.flag = flag_name(name)
        self.message = message
        super().__init__(f"{self.flag}: {message}")


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def reports_errors() -> bool:
    """Whether this process prints user errors (and other once-per-node text): the first process
    of each node (ranks on one node run the same checks on the same files, so one line per node
    says it all)."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


def exit_with(prog: str, message: str, code: int = 2) -> None:
    """Prints ``prog: error: message`` (one line, on the reporting process) and exits."""
    if reports_errors():
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
