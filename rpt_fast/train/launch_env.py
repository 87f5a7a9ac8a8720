"""Where this process sits in the job, read from whichever launcher started it.

``torchrun`` and the ``deepspeed`` launcher's default (pdsh) mode export ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``. ``mpirun`` (Open MPI, MVAPICH2, Intel MPI / MPICH through
PMI), ``srun`` (Slurm) and the DeepSpeed launcher's openmpi/mvapich/slurm modes export only
their own variables. Filling the torch ones with "rank 0 of 1" there would turn a 16-rank job
into 16 independent runs writing one folder, so they are mapped from the launcher's instead;
only a process that no launcher started becomes rank 0 of 1.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping

# (launcher, rank, world size, local rank) variables, checked in this order after torch's own.
_LAUNCHERS = (
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("mvapich", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
    ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


@dataclass(frozen=True)
class LaunchEnv:
    """This process's place as the launcher described it (before any process group exists)."""

    launcher: str  # "torch" (RANK/WORLD_SIZE set), one of _LAUNCHERS' names, or "none"
    rank: int
    world_size: int
    local_rank: int


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"launcher variable {name}={value!r} is not an integer") from None


def discover(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """Reads ``env`` (default ``os.environ``); never changes it."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        return _checked(LaunchEnv("torch", rank, world, local))
    for name, rank_var, size_var, local_var in _LAUNCHERS:
        if rank_var in env and size_var in env:
            rank, world = _int(env, rank_var), _int(env, size_var)
            # Without a local rank (PMI outside Intel MPI), ranks are assumed packed per node.
            local = _int(env, local_var) if local_var in env else _local_from_packing(env, rank)
            return _checked(LaunchEnv(name, rank, world, local))
    return LaunchEnv("none", 0, 1, 0)


def _local_from_packing(env: Mapping[str, str], rank: int) -> int:
    per_node = env.get("LOCAL_WORLD_SIZE") or env.get("SLURM_NTASKS_PER_NODE")
    return rank % int(per_node.split("(")[0]) if per_node else 0


def _checked(info: LaunchEnv) -> LaunchEnv:
    if not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise RuntimeError(
            f"launcher ({info.launcher}) says rank {info.rank} of world size {info.world_size}, "
            f"local rank {info.local_rank}: not a valid place in a job"
        )
    return info


def export(info: LaunchEnv) -> None:
    """Sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT in ``os.environ`` for
    ``torch.distributed``'s env:// rendezvous. A multi-process job that did not say where rank
    0 listens (MASTER_ADDR) is refused: guessing would hang every rank."""
    if info.world_size > 1 and "MASTER_ADDR" not in os.environ:
        raise RuntimeError(
            f"{info.world_size} ranks started by {info.launcher}, but MASTER_ADDR is not set: export "
            "MASTER_ADDR=<rank 0's host> and MASTER_PORT=<free port> to every rank (the deepspeed "
            f"launcher does this itself; this host is {socket.gethostname()})"
        )
    os.environ.setdefault("RANK", str(info.rank))
    os.environ.setdefault("WORLD_SIZE", str(info.world_size))
    os.environ.setdefault("LOCAL_RANK", str(info.local_rank))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    # One process: port 0 lets its store bind a port the OS picks (no race with other runs).
    os.environ.setdefault("MASTER_PORT", "0" if info.world_size == 1 else "29500")
