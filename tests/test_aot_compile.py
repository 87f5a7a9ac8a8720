"""Every shipped Triton config compiles for sm_80 and sm_90 in fp32/fp16/bf16, spill-free and
within the target's shared memory, specialised as it runs; no GPU needed.

The compile runs in a subprocess with TRITON_INTERPRET unset: under the interpreter (which
conftest.py turns on without a GPU) ``@triton.jit`` functions cannot be compiled.
"""

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
        assert r["ctas_per_sm"] >= 1, f"{where} fits no block on an SM"
    for dtype in DTYPES:
        names = {r["name"] for r in rows if r["dtype"] == dtype}
        assert names, f"no {dtype} configs"
        for cc in TARGETS:
            compiled = {r["name"] for r in rows if r["dtype"] == dtype and r["cc"] == cc}
            assert compiled == names, f"{dtype}: sm_{cc} misses {sorted(names - compiled)}"
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_specs_carry_the_launchers_specialisation():
    """Ints divisible by 16 get tt.divisibility, ints equal to 1 become constants, as Triton's
    launcher specialises them at run time (the AOT check compiles the variant that runs)."""
    import torch

    from rpt_fast.ops import triton_residual_mlp as trm
    from rpt_fast.ops.aot import spec_from_launch

    forward, backward = trm.plans(100, 2048, 800, torch.bfloat16)
    f1 = spec_from_launch(forward[1])
    assert f1.signature["a_ptr"] == "*bf16"
    assert {"N", "K", "stride_bn"} <= set(f1.divisible)  # m = 800, d = 2048
    assert "M" not in f1.divisible and f1.signature["M"] == "i32"  # 100 rows
    assert f1.constexprs["stride_bk"] == 1 and f1.signature["stride_bk"] == "constexpr"
    one_row = spec_from_launch(trm.plans(1, 2048, 800, torch.bfloat16)[0][1])
    assert one_row.constexprs["M"] == 1
    names = {s.name.split(" [")[0] for s in trm.aot_specs(torch.bfloat16)}
    assert {launch.name.split(" split-K")[0] for launch in forward[1:] + backward} <= {
        n.split(" split-K")[0] for n in names}


def test_ptxas_is_the_one_triton_compiles_with():
    pytest.importorskip("triton.backends.nvidia.compiler")
    from triton.backends.nvidia.compiler import get_ptxas

    from rpt_fast.ops.aot import _ptxas

    for cc in TARGETS:
        assert _ptxas(cc) == get_ptxas(cc).path
