"""The run folder must be one folder for every rank: checkpoints are written by every rank and
sealed by rank 0, metrics and exports are written by rank 0 and read back on resume by all.

On node-local disks the same path names a different folder on each node, and a run would
train for hours before a checkpoint came out incomplete. :func:`require_shared` finds out at
start-up instead: rank 0 writes a marker with a fresh random name, every rank looks for it.
"""

from __future__ import annotations

import os
import secrets
import socket

from .checkpoint import CheckpointError
from .distributed import DistInfo, all_gather_objects, barrier, broadcast_object
from .rank_errors import on_every_rank


def require_shared(info: DistInfo, path: str) -> None:
    """Raises CheckpointError on every rank unless every rank sees the files rank 0 writes in
    ``path`` (rank 0 has created it)."""
    if info.world_size == 1:
        return
    token = broadcast_object(info, secrets.token_hex(8) if info.is_main else None)
    marker = os.path.join(path, f".rpt-shared-check-{token}")
    if info.is_main:
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write(token)
            handle.flush()
            os.fsync(handle.fileno())
    barrier(info)
    try:
        with open(marker, encoding="utf-8") as handle:
            seen = handle.read() == token
    except OSError:
        seen = False
    views = all_gather_objects(info, (seen, socket.gethostname()))
    if info.is_main:
        os.remove(marker)
    blind = [(rank, host) for rank, (ok, host) in enumerate(views) if not ok]
    if blind:
        who = ", ".join(f"rank {rank} on {host}" for rank, host in blind[:8])
        raise on_every_rank(CheckpointError(
            f"--output-dir {path} is not shared: {who}{' and more' if len(blind) > 8 else ''} cannot see "
            f"the files rank 0 ({views[0][1]}) writes there. rpt-train needs the output folder on a "
            "filesystem every node shares (NFS, Lustre, GPFS, ...): checkpoints are written by every "
            "rank and sealed by rank 0; node-local disks are not supported"
        ))
