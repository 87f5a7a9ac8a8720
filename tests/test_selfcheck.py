"""The self-check users run (``python -m rpt_fast``) and the one ``rpt-train`` runs before its
first step: the lines they print, exit status 1 (rpt-train: its one-line error, exit 2) when a
backend is made to compute the wrong numbers, and ``--skip-self-check``."""

import os
import subprocess
import sys

import pytest
import torch

from rpt_fast import _backends, selfcheck
from rpt_fast.ops import native

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
from cli_run import env  # noqa: E402

TINY = "7,24,12"  # --shapes for the Triton interpreter: seconds


def _lines(capsys):
    return capsys.readouterr().out.strip().splitlines()


def _one(lines, start):
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


def test_reports_versions_device_auto_choice_and_one_line_per_backend(capsys):
    assert selfcheck.main(["--device", "cpu", "--backend", "native,eager"]) == 0
    lines = _lines(capsys)
    assert lines[0].startswith("rpt-fast ") and f"torch {torch.__version__}" in lines[0]
    for package in ("triton", "transformers", "deepspeed"):
        assert f", {package} " in lines[0]
    assert lines[1].startswith("torch built with CUDA ")
    native = [line.split(": ", 1)[1] for line in lines if line.startswith("native extension: ")]
    assert native[0].startswith(("built", "loaded")) and len(native) == 1 or (  # a fresh TORCH_EXTENSIONS_DIR:
        native[0].startswith("not built") and native[1].startswith("building it now") and len(native) == 2)
    auto = _one(lines, 'backend="auto" on cpu: ')
    assert "float32 -> native" in auto and "float16 -> eager (native: " in auto
    for backend in ("native", "eager"):
        line = _one(lines, f"PASS {backend} ")
        assert " worst " in line and " / tolerance " in line and (
            "15 cases in bfloat16, float32, float64" in line or "15 cases in float32, float16, float64" in line)
    assert "float16: the native kernels take" in _one(lines, "    not checked: float16")
    assert lines[-1].startswith("self-check passed: 30 cases on 2 backend(s) in ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, Triton is compiled, not interpreted")
def test_triton_through_the_interpreter_and_what_it_leaves_out(capsys):
    assert os.environ.get("TRITON_INTERPRET") == "1"  # conftest.py, on a machine without CUDA
    assert selfcheck.main(["--device", "cpu", "--backend", "triton", "--shapes", TINY]) == 0
    lines = _lines(capsys)
    assert "4 cases in float32, float16" in _one(lines, "PASS triton on cpu")
    skipped = _one(lines, "    not checked: ")
    assert "bfloat16: the Triton interpreter computes bfloat16 tl.dot wrongly" in skipped
    assert "float64: the Triton kernels take" in skipped


def test_triton_is_skipped_with_the_reason_without_the_interpreter(capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(_backends, "_REASONS", {})  # answers cached under TRITON_INTERPRET=1
    assert selfcheck.main(["--device", "cpu", "--backend", "triton"]) == 0
    lines = _lines(capsys)
    assert "Triton runs on CUDA tensors (or CPU tensors with TRITON_INTERPRET=1" in _one(lines, "SKIP triton on cpu")
    assert lines[-1].startswith("self-check passed: 0 cases on 0 backend(s)")


@pytest.mark.parametrize("wrong", ["scaled", "unwritten"])
def test_a_wrong_backend_fails_the_check_with_exit_status_1(capsys, monkeypatch, wrong):
    """The native shared op made wrong (its output 5% off, or one row never written)."""
    original = native.residual_mlp

    def broken(*args):
        y = original(*args)
        return y * 1.05 if wrong == "scaled" else y.index_fill(0, torch.tensor([0]), float("nan"))

    monkeypatch.setattr(native, "residual_mlp", broken)
    assert selfcheck.main(["--device", "cpu", "--backend", "native,eager", "--shapes", TINY]) == 1
    lines = _lines(capsys)
    assert _one(lines, "FAIL native ")
    assert _one(lines, "PASS eager ")
    failed = [line for line in lines if line.startswith("    FAILED ")]
    assert len(failed) == 3  # the shared case in each of bfloat16, float32, float64; not grouped
    assert all("native" in line and "shared op at (7, 24, 12)" in line for line in failed)
    assert lines[-1].startswith("self-check FAILED")


def test_python_dash_m_rpt_fast_runs_it_and_stops_quietly_when_its_reader_leaves():
    command = [sys.executable, "-m", "rpt_fast", "--backend", "eager", "--shapes", TINY]
    proc = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].startswith("self-check passed"), proc.stderr
    piped = subprocess.run(" ".join(command) + " | head -1", shell=True, env=env(), capture_output=True,
                           text=True, timeout=120)
    assert piped.stdout.startswith("rpt-fast ") and "Traceback" not in piped.stderr, piped.stderr


def test_tolerances_are_the_gpu_tiers_bounds():
    out, grad = selfcheck.tolerances(torch.bfloat16)
    assert 1.0e-2 < out < 1.1e-2 and 2.0e-2 < grad < 2.1e-2
    assert selfcheck.tolerances(torch.float32) < selfcheck.tolerances(torch.float32, tf32=True)
    assert selfcheck.tolerances(torch.float64) == (1e-10, 1e-10)


def test_bad_arguments_are_one_line_errors(capsys):
    for argv, message in ((["--backend", "cuda"], "--backend: expected triton, native or eager"),
                          (["--shapes", "3,4"], "--shapes: expected 'M,d,m;M,d,m'")):
        with pytest.raises(SystemExit) as exit_info:
            selfcheck.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


# rpt-train, as a user runs it; WRONG makes the native shared op 1% off before the command starts.
TRAIN = ["--no-deepspeed", "--max-steps", "1", "--eval-interval", "0", "--num-tokens", "4", "--no-progress"]
WRONG = os.path.join(os.path.dirname(__file__), "train_scripts", "wrong_native_op.py")


def _rpt_train(tmp_path, *args, wrong=False):
    command = [sys.executable, *([WRONG] if wrong else ["-m", "rpt_fast.train"]), *TRAIN, *args]
    return subprocess.run(command, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dropout", [[], ["--prompt-dropout", "0.1"]], ids=["plain", "dropout"])
def test_rpt_train_prints_its_self_check_line_before_training(tmp_path, dropout):
    # with --prompt-dropout the steps run the MLP eagerly, evaluation and export the fused op
    proc = _rpt_train(tmp_path, "--output-dir", "run", *dropout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = _one(proc.stdout.splitlines(), "self-check: ")
    assert line.startswith("self-check: native, float32, shared op at (4, 64, 800) on cpu: worst error ")
    assert line.endswith(", ok")
    assert proc.stdout.index("self-check: ") < proc.stdout.index("done: 1 steps")


@pytest.mark.timeout(300)
def test_rpt_train_stops_on_a_mismatch_and_skips_the_check_when_asked(tmp_path):
    proc = _rpt_train(tmp_path, "--output-dir", "run", wrong=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(
        "rpt-train: error: --backend: self-check failed: native, float32, shared op at (4, 64, 800) on cpu: "
        "worst error "), lines
    assert "--skip-self-check" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing left behind
    proc = _rpt_train(tmp_path, "--output-dir", "run", "--skip-self-check", wrong=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "self-check" not in proc.stdout and "done: 1 steps" in proc.stdout
