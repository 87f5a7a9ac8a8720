"""Launcher discovery: the rank, world size and local rank come from whichever launcher started
the process (torchrun/deepspeed, Open MPI, MVAPICH2, Slurm, PMI), and only a process no launcher
started becomes rank 0 of 1."""

import os

import pytest

from rpt_fast.train import launch_env
from rpt_fast.train.launch_env import LaunchEnv, discover


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, LaunchEnv("none", 0, 1, 0)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, LaunchEnv("torch", 3, 4, 1)),
        ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_LOCAL_RANK": "5"},
         LaunchEnv("openmpi", 5, 16, 5)),
        ({"SLURM_PROCID": "13", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5"}, LaunchEnv("slurm", 13, 16, 5)),
        ({"MV2_COMM_WORLD_RANK": "9", "MV2_COMM_WORLD_SIZE": "12", "MV2_COMM_WORLD_LOCAL_RANK": "1"},
         LaunchEnv("mvapich", 9, 12, 1)),
        ({"PMI_RANK": "6", "PMI_SIZE": "8", "MPI_LOCALRANKID": "2"}, LaunchEnv("pmi", 6, 8, 2)),
        ({"PMI_RANK": "6", "PMI_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, LaunchEnv("pmi", 6, 8, 2)),
        # torch's variables, where a launcher set them, win over the MPI ones
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "OMPI_COMM_WORLD_RANK": "0",
          "OMPI_COMM_WORLD_SIZE": "1"}, LaunchEnv("torch", 1, 2, 1)),
    ],
    ids=["none", "torch", "openmpi", "slurm", "mvapich", "pmi-intel", "pmi-packed", "torch-wins"],
)
def test_discover_reads_every_launcher(env, expected):
    assert discover(env) == expected


def test_bad_launcher_values_are_named():
    with pytest.raises(RuntimeError, match="OMPI_COMM_WORLD_RANK='x'"):
        discover({"OMPI_COMM_WORLD_RANK": "x", "OMPI_COMM_WORLD_SIZE": "2"})
    with pytest.raises(RuntimeError, match="rank 4 of world size 4"):
        discover({"SLURM_PROCID": "4", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"})


def _clean(monkeypatch):
    """Unset torch's variables; whatever export() sets is undone after the test (setenv first
    records the original state, also when the variable was absent)."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


def test_export_maps_mpi_variables_for_torch(monkeypatch):
    _clean(monkeypatch)
    monkeypatch.setenv("MASTER_ADDR", "node0")
    launch_env.export(LaunchEnv("slurm", 13, 16, 5))
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("13", "16", "5")
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("node0", "29500")


def test_export_single_process_lets_the_os_pick_its_port(monkeypatch):
    _clean(monkeypatch)
    launch_env.export(LaunchEnv("none", 0, 1, 0))
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_PORT"]) == ("0", "1", "0")


def test_export_refuses_a_multi_rank_job_without_master_addr(monkeypatch):
    _clean(monkeypatch)
    with pytest.raises(RuntimeError, match="16 ranks started by openmpi, but MASTER_ADDR is not set"):
        launch_env.export(LaunchEnv("openmpi", 5, 16, 5))
    assert "RANK" not in os.environ  # nothing half-set
