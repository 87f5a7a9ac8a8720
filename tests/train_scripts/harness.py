"""Runs ``rpt-train`` (or a helper script) in subprocesses on CPU ranks for the tests, and reads
back what a run leaves in its output folder."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "tests", "train_scripts")

# Tiny and fast: 8 prompt tokens, bottleneck 16, 64 training examples, batches of 4.
SMALL = ["--num-tokens", "8", "--bottleneck", "16", "--max-train-examples", "64", "--batch-size", "4",
         "--max-eval-examples", "8", "--log-interval", "1", "--no-progress"]


def env() -> dict:
    """CPU ranks (gloo), Triton kernels in the interpreter, and a test-only extensions folder
    (kept between runs: DeepSpeed and rpt_fast compile into it once)."""
    out = dict(os.environ)
    out.update(
        CUDA_VISIBLE_DEVICES="",
        DS_ACCELERATOR="cpu",
        TRITON_INTERPRET="1",
        PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
    )
    out.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(tempfile.gettempdir(), "rpt-fast-test-extensions"))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        out.pop(key, None)
    return out


def free_port() -> int:
    """A port free now that no other process of this test run was handed: a port is released
    here and bound later by the launcher, so two xdist workers asking the OS could get the same
    one in between. Handed-out ports are recorded in a locked file shared by the run's workers."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
    with open(os.path.join(tempfile.gettempdir(), f"rpt-fast-test-ports-{run_id}"), "a+") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.seek(0)
        handed_out = {int(line) for line in log.read().split()}
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in handed_out:
                log.write(f"{port}\n")
                return port


def run(args: list[str], *, timeout: float, check: bool = True,
        extra_env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env={**env(), **(extra_env or {})}, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def async_io_builds() -> bool:
    """Whether DeepSpeed's async_io op (NVMe offload) can be built here: it needs libaio's
    headers and library (Debian: libaio-dev, or CPATH/LIBRARY_PATH/LD_LIBRARY_PATH to them)."""
    probe = "from deepspeed.ops.op_builder import AsyncIOBuilder as B; raise SystemExit(not B().is_compatible())"
    return run([sys.executable, "-c", probe], timeout=120, check=False).returncode == 0


def train(*args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m rpt_fast.train ARGS`` in a single process (no launcher)."""
    return run([sys.executable, "-m", "rpt_fast.train", *args], timeout=timeout, check=check)


def launch(num_ranks: int, script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``deepspeed --num_gpus N`` on CPU ranks, with a fresh master port."""
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(num_ranks),
                "--master_port", str(free_port())]
    return run([*launcher, script, *args], timeout=timeout)


def losses(out: str) -> list[float]:
    with open(os.path.join(out, "metrics.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    return [r["loss"] for r in records if r["type"] == "train"]


def prompt(out: str) -> torch.Tensor:
    return load_file(os.path.join(out, "prompt.safetensors"))["prompt_embeddings"]


def summary(out: str) -> dict:
    with open(os.path.join(out, "summary.json")) as handle:
        return json.load(handle)


def rewind(out: str, step: int) -> None:
    """The run folder as a kill after ``step``'s checkpoint leaves it: later checkpoints (the
    final state a finished run saves, too) gone, ``latest`` pointing at ``step``'s."""
    root = os.path.join(out, "checkpoints")
    for entry in os.listdir(root):
        if entry.startswith("step-") and int(entry[len("step-"):]) > step:
            shutil.rmtree(os.path.join(root, entry))
    with open(os.path.join(root, "latest"), "w") as handle:
        handle.write(f"step-{step:08d}")
