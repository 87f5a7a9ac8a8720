"""``benchmarks/gpu_check.sh --dry-run`` on CPU: the one script a lent GPU runs goes end to end
(every step on tiny CPU shapes, results packed), so minutes of a GPU session are never spent on
a broken script. It runs as the device tool runs it: the interpreter given by ``PYTHON``, with
a ``python3`` on PATH that fails if called, and the test's virtual environment not activated."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _path_without_this_venv(fake_bin: Path) -> str:
    venv_bin = str(Path(sys.executable).parent)
    kept = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    return os.pathsep.join([str(fake_bin), *kept])


@pytest.mark.timeout(900)
def test_gpu_check_dry_run_passes_and_packs_its_results(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text('#!/bin/sh\necho "a bare python3 was called: $*" >&2\nexit 97\n')
    (fake_bin / "python3").chmod(0o755)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(OUT=str(out), PYTHON=sys.executable, PATH=_path_without_this_venv(fake_bin))
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=850)
    log = proc.stdout + proc.stderr
    assert "a bare python3 was called" not in log, log[-4000:]
    assert proc.returncode == 0, log[-4000:]
    assert "GPU CHECK PASSED" in log, log[-4000:]

    # What the device tool brings back: at most 8 files, no folders (it goes 2 folders deep).
    assert all(p.is_file() for p in out.iterdir()) and len(list(out.iterdir())) <= 8, sorted(out.iterdir())
    assert {p.name for p in out.iterdir()} >= {"gpu_check.log", "report.md", "bench.tar.gz", "host.json",
                                                 "kernels-fp32.json", "train.json"}
    assert (out / "report.md").read_text().startswith("### Kernel benchmarks")
    with tarfile.open(out / "bench.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("kernels.json") for n in names), names
    assert any(n.endswith(".png") for n in names), names

    # The order and the steps: variant counts for the limits, the self-check beside the GPU
    # tier's files named one by one (not -m gpu over the tree, nor this file), then the rest.
    for step in ("selfcheck", "tests", "bench"):
        assert f"Triton variants, {step}: " in log
    assert "[self-check] PASS native on cpu" in log and "[self-check] === self-check: rc=0" in log
    tests_line = next(line for line in log.splitlines() if line.startswith("=== gpu-tier tests (limit"))
    assert "tests/test_gpu_kernels.py" in tests_line and " -m gpu" not in tests_line
    assert "test_gpu_check_script.py" not in tests_line
    order = [log.index(f"=== {name}") for name in
             ("gpu-tier tests (", "kernel benchmark, fp32 (", "host time", "training benchmark (")]
    assert order == sorted(order), order
