"""``--report-to tensorboard``: the records of ``metrics.jsonl`` as TensorBoard scalars in
``<output-dir>/tensorboard/`` (``train/loss``, ``train/lr``, ``eval/accuracy``, ...), written
by rank 0. Optional: needs the ``tensorboard`` package, checked before the run starts."""

from __future__ import annotations

import importlib.util

from .errors import UsageError

FOLDER = "tensorboard"


def check_available() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError("report_to", "tensorboard needs the tensorboard package (pip install tensorboard), "
                         "which is not installed")


class TensorBoardLog:
    """Scalars of each record; on resume, events from ``resume_step + 1`` on (written by the
    interrupted process) are purged, as ``metrics.jsonl`` drops its records past the checkpoint."""

    def __init__(self, folder: str, resume_step: int | None = None):
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(folder, purge_step=purge)

    def write(self, record: dict) -> None:
        kind, step = record["type"], record["step"]
        for key, value in record.items():
            if key not in ("type", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
