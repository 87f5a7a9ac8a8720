"""Process-group setup shared by every launch style: the ``deepspeed`` launcher (one or many
nodes), ``torchrun``, or a single process started by hand, on GPUs or CPU ranks."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from . import launch_env


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def choose_accelerator() -> None:
    """DeepSpeed picks its accelerator when first imported; without CUDA it must be told "cpu"
    (an unset variable on a CPU-only machine is set here, before any DeepSpeed import)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _skip_cpu_shm_op() -> None:
    """DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce op when its comm
    backend starts (and probes every op's compiler support first): minutes on a small machine,
    before the first step. CPU ranks serve tests and demos, where gloo is fast enough, so the op
    is marked unavailable; GPU runs are untouched."""
    import deepspeed.ops

    table = vars(deepspeed.ops).get("__compatible_ops__")
    if table is None:  # DeepSpeed >= 0.18 probes lazily: pre-empt the probe
        deepspeed.ops.__compatible_ops__ = {"deepspeed_shm_comm": False}
    else:
        table["deepspeed_shm_comm"] = False


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(use_deepspeed: bool) -> DistInfo:
    """Initializes the process group (NCCL on GPUs, gloo on CPU) and returns this rank's place.

    The rank comes from the launcher (see :mod:`launch_env`: torchrun/deepspeed variables, or
    Open MPI, MVAPICH2, Slurm and PMI ones mapped onto them). Plain PyTorch mode runs one
    process: a launcher's world size > 1 is an error there.
    """
    if not use_deepspeed:
        world = launch_env.discover().world_size
        if world != 1:
            raise RuntimeError(
                f"--no-deepspeed trains in a single process, but the launcher started {world}: "
                "use DeepSpeed (any --zero-stage) for several ranks"
            )
        return DistInfo(0, 1, 0, _device(0))
    choose_accelerator()
    launch = launch_env.discover()
    launch_env.export(launch)
    # DeepSpeed calls torch.distributed APIs that torch deprecates, once per call: noise.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    import deepspeed

    local_rank = int(os.environ["LOCAL_RANK"])
    device = _device(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cpu":
        _skip_cpu_shm_op()
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    return DistInfo(
        torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, device
    )


def local_world_size() -> int:
    """Ranks on this node (the launchers' LOCAL_WORLD_SIZE, else all of them)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE") or 1)


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        torch.distributed.barrier()


def broadcast_object(info: DistInfo, obj):
    """Rank 0's ``obj`` on every rank."""
    if info.world_size == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(info: DistInfo, obj) -> list:
    if info.world_size == 1:
        return [obj]
    out = [None] * info.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def all_reduce_mean(info: DistInfo, value: torch.Tensor) -> torch.Tensor:
    if info.world_size == 1:
        return value
    value = value.clone()
    torch.distributed.all_reduce(value)
    return value / info.world_size


def shutdown(info: DistInfo, use_deepspeed: bool) -> None:
    if use_deepspeed and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
