"""Runs ``rpt-train`` as a user does, in a subprocess (optionally under the ``deepspeed``
launcher on CPU ranks), for the command-line tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def env(**extra) -> dict:
    """CPU ranks, this checkout first on the path, no launcher variables or debug switch left over."""
    out = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RPT_DEBUG")}
    out.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])), **extra)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rpt_train(cwd, *args, launcher_ranks: int = 0, timeout: float = 240, **extra_env) -> subprocess.CompletedProcess:
    """``python -m rpt_fast.train ARGS`` in ``cwd``; with ``launcher_ranks`` under
    ``deepspeed --num_gpus N --master_port <free>`` (CPU ranks)."""
    command = [sys.executable, "-m", "rpt_fast.train", *args]
    if launcher_ranks:
        command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(launcher_ranks),
                   "--master_port", str(free_port()), "--module", "rpt_fast.train", *args]
    return subprocess.run(command, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)
