"""Every shipped Triton config compiles for sm_80 and sm_90 in fp32/fp16/bf16, spill-free and
within the target's shared memory; no GPU needed.

The compile runs in a subprocess with TRITON_INTERPRET unset: under the interpreter (which
conftest.py turns on without a GPU) ``@triton.jit`` functions cannot be compiled.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rpt_fast.ops.aot import DTYPES, KERNEL_MODULES, SHARED_LIMIT, TARGETS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", KERNEL_MODULES)
def test_every_config_compiles_without_spills(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "rpt_fast.ops.aot", "--json", "--modules", module],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.stdout.strip(), f"no output; stderr:\n{proc.stderr[-4000:]}"
    rows = json.loads(proc.stdout)

    errors = [f"{r['dtype']} sm_{r['cc']} {r['name']}: {r['error']}" for r in rows if r["error"]]
    assert not errors, "\n".join(errors)
    for r in rows:
        where = f"{r['dtype']} sm_{r['cc']} {r['name']}"
        assert r["spill_bytes"] == 0, f"{where} spills {r['spill_bytes']} bytes"
        assert r["shared_bytes"] <= SHARED_LIMIT[r["cc"]], f"{where} needs {r['shared_bytes']} B"
    for dtype in DTYPES:
        names = {r["name"] for r in rows if r["dtype"] == dtype}
        assert names, f"no {dtype} configs"
        for cc in TARGETS:
            compiled = {r["name"] for r in rows if r["dtype"] == dtype and r["cc"] == cc}
            assert compiled == names, f"{dtype}: sm_{cc} misses {sorted(names - compiled)}"
    assert proc.returncode == 0, proc.stderr[-4000:]
