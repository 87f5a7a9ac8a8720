"""``benchmarks/gpu_check.sh --dry-run`` on CPU: the one script a lent GPU runs goes end to end
(every step on tiny CPU shapes, results packed), so minutes of a GPU session are never spent on
a broken script."""

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_gpu_check_dry_run_passes_and_packs_its_results(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=850)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "GPU CHECK PASSED" in log, log[-4000:]
    assert (tmp_path / "report.md").read_text().startswith("### Kernel benchmarks")
    with tarfile.open(tmp_path / "bench.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("kernels.json") for n in names), names
    assert any(n.endswith(".png") for n in names), names
    assert "host time (launches stubbed): rc=0" in log and (tmp_path / "host.json").exists()
