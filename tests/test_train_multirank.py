"""Multi-rank behaviour on CPU ranks started the way ``mpirun`` starts them: each process gets
only Open MPI's variables (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK) plus MASTER_ADDR/PORT, no
RANK/WORLD_SIZE. Covers launcher discovery end to end and failure propagation."""

import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

RUN = [*harness.SMALL, "--max-steps", "6", "--eval-interval", "0", "--backend", "eager"]


def spawn_mpi_style(script: str, per_rank_args: list[list[str]], timeout: float = 300):
    """Starts one process per entry of ``per_rank_args``; returns [(returncode, stderr, exit_time)]."""
    world = len(per_rank_args)
    port = str(harness.free_port())
    procs = []
    for rank, args in enumerate(per_rank_args):
        env = {**harness.env(), "OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": str(world),
               "OMPI_COMM_WORLD_LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, script, *args], env=env, cwd=harness.REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    ended = [None] * world
    while None in ended and time.monotonic() < deadline:
        for rank, proc in enumerate(procs):
            if ended[rank] is None and proc.poll() is not None:
                ended[rank] = time.monotonic()
        time.sleep(0.2)
    results = []
    for rank, proc in enumerate(procs):
        if ended[rank] is None:
            proc.kill()
        _, err = proc.communicate()
        results.append((proc.returncode, err, ended[rank]))
    return results


@pytest.mark.timeout(360)
def test_rank0_only_failure_stops_every_rank_with_the_same_error(tmp_path):
    out = str(tmp_path / "run")
    script = os.path.join(harness.SCRIPTS, "fail_on_main.py")
    args = ["--output-dir", out, "--save-interval", "2", *RUN]
    results = spawn_mpi_style(script, [args, args])
    expected = "rpt-train: error: rank 0 failed: OSError: [Errno 28] No space left on device (injected)"
    for rank, (code, err, ended) in enumerate(results):
        assert ended is not None, f"rank {rank} still running:\n{err[-3000:]}"
        assert code != 0, f"rank {rank} exited 0:\n{err[-3000:]}"
        assert expected in err, f"rank {rank}:\n{err[-3000:]}"
    # rank 1 waits in a collective that can never finish: it leaves within seconds, not 30 min
    assert abs(results[0][2] - results[1][2]) < 10
