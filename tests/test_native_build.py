"""How the native extension gets built: the just-in-time ninja build into TORCH_EXTENSIONS_DIR
(compiled once, then reused), and the eager fallback when there is no C++ compiler. Each case
runs in a fresh interpreter, since a process loads the extension at most once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPILING = "rpt_fast: compiling the native C++ extension"

# Runs in the child: ignore any library setup.py built, so the just-in-time path is exercised.
PRELUDE = """
import json, warnings
import torch
import rpt_fast
from rpt_fast.ops import native
native._prebuilt_library = lambda src: None
torch.manual_seed(0)
x, w1, b1, w2, b2, g, b = (torch.randn(s) for s in ((5, 16), (8, 16), (8,), (16, 8), (16,), (16,), (16,)))
"""

USE_NATIVE = PRELUDE + """
y = rpt_fast.residual_mlp(x, w1, b1, w2, b2, g, b, backend="native")
ref = rpt_fast.residual_mlp(x, w1, b1, w2, b2, g, b, backend="eager")
print(json.dumps({"max_error": (y - ref).abs().max().item()}))
"""

NO_COMPILER = PRELUDE + """
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    y = rpt_fast.residual_mlp(x, w1, b1, w2, b2, g, b)
    y2 = rpt_fast.residual_mlp(x, w1, b1, w2, b2, g, b)
ref = rpt_fast.residual_mlp(x, w1, b1, w2, b2, g, b, backend="eager")
try:
    rpt_fast.residual_mlp(x, w1, b1, w2, b2, g, b, backend="native")
    error = None
except rpt_fast.BackendUnavailableError as exc:
    error = str(exc)
print(json.dumps({
    "warnings": [str(w.message) for w in caught if "native" in str(w.message)],
    "auto_equals_eager": torch.equal(y, ref) and torch.equal(y2, ref),
    "error": error,
}))
"""


def run_child(code: str, extensions_dir: Path, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions_dir), **env}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environ, cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_jit_build_compiles_once_then_reuses_the_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("torch_extensions")
    first = run_child(USE_NATIVE, cache)
    assert first.stderr.count(COMPILING) == 1, first.stderr[-2000:]
    assert json.loads(first.stdout.splitlines()[-1])["max_error"] < 1e-4
    assert list(cache.rglob("rpt_fast_native_*.so")), "no library in TORCH_EXTENSIONS_DIR"

    # A process killed inside torch's build step leaves its lock file behind; torch would wait
    # on it forever. A library already built from these sources is loaded without that step.
    for library in cache.rglob("rpt_fast_native_*.so"):
        (library.parent / "lock").touch()
    second = run_child(USE_NATIVE, cache)
    assert COMPILING not in second.stderr, second.stderr[-2000:]
    assert json.loads(second.stdout.splitlines()[-1])["max_error"] < 1e-4


def test_without_compiler_auto_falls_back_and_native_raises(tmp_path):
    proc = run_child(NO_COMPILER, tmp_path, CXX=str(tmp_path / "no-such-compiler"))
    result = json.loads(proc.stdout.splitlines()[-1])
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "no C++ compiler" in result["warnings"][0]
    assert result["auto_equals_eager"]
    assert result["error"] is not None and "no C++ compiler" in result["error"]
    assert "backend='native'" in result["error"]
    assert COMPILING not in proc.stderr
