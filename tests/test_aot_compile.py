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
    """As Triton's launcher specialises at run time (ints divisible by 16 get tt.divisibility,
    ints equal to 1 become constants), except for what a kernel names in do_not_specialize:
    row counts always, and the d- and m-derived ints of the plain kernels."""
    import torch

    from rpt_fast.ops import triton_residual_mlp as trm
    from rpt_fast.ops.aot import spec_from_launch

    forward, backward = trm.plans(100, 2048, 800, torch.bfloat16)
    f1 = spec_from_launch(forward[1])
    assert f1.kernel.variant == "hinted" and f1.signature["a_ptr"] == "*bf16"
    assert {"N", "K", "stride_bn", "k_chunk"} == set(f1.divisible)  # m = 800, d = 2048
    assert f1.signature["M"] == "i32"  # 100 rows
    assert f1.constexprs["stride_bk"] == 1 and f1.signature["stride_bk"] == "constexpr"
    one_row = spec_from_launch(trm.plans(1, 2048, 800, torch.bfloat16)[0][1])
    assert one_row.signature["M"] == "i32" and "M" not in one_row.constexprs
    for shape in [(100, 1000, 800), (96, 2048, 1)]:  # d, then m, not a multiple of 16
        plain = spec_from_launch(trm.plans(*shape, torch.bfloat16)[0][1])
        assert plain.kernel.variant == "plain" and plain.divisible == ("k_chunk",)
        assert {plain.signature[k] for k in ("M", "N", "K", "stride_bn")} == {"i32"}
        assert plain.constexprs["stride_bk"] == 1
    names = {s.name.split(" [")[0] for s in trm.aot_specs(torch.bfloat16)}
    assert {launch.name.split(" split-K")[0] for launch in forward[1:] + backward} <= {
        n.split(" split-K")[0] for n in names}


def _pattern(spec) -> tuple:
    """What decides the compiled code of a spec, but for the split-K row tile BLOCK_M (the AOT
    shapes reach 16 and 128 in every variant: the tiles between hold fewer registers)."""
    split_k = "split-K" in spec.name
    constexprs = {k: v for k, v in spec.constexprs.items() if not (split_k and k == "BLOCK_M")}
    return (spec.kernel.__name__, spec.kernel.variant, tuple(sorted(constexprs.items())),
            tuple(spec.signature.items()), spec.divisible, spec.num_warps, spec.num_stages,
            tuple(spec.options.items()))


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_every_variant_that_can_run_is_compiled(dtype_name):
    """Launch plans over a sweep of shapes (rows, d and m: 1, odd, multiples of 16, each
    row-kernel config, both paths) only run kernel variants the AOT check compiles."""
    import torch

    from rpt_fast.ops import triton_residual_mlp as trm
    from rpt_fast.ops.aot import spec_from_launch
    from rpt_fast.ops.launches import ZeroFill

    dtype = getattr(torch, dtype_name)
    compiled = {_pattern(spec) for spec in trm.aot_specs(dtype)}
    missing = set()
    for M in (1, 7, 16, 100, 128, 129, 300, 4096):
        for d in (1, 8, 16, 100, 256, 768, 1000, 2048, 3000, 4096, 5000, 8192):
            for m in (1, 5, 16, 40, 100, 392, 800, 1024):
                forward, backward = trm.plans(M, d, m, dtype)
                for launch in forward + backward:
                    if not isinstance(launch, ZeroFill):
                        spec = spec_from_launch(launch, f"{launch.name} [{M}x{d}x{m}]")
                        if _pattern(spec) not in compiled:
                            missing.add(spec.name)
    assert not missing, sorted(missing)[:20]


def test_ptxas_is_the_one_triton_compiles_with():
    pytest.importorskip("triton.backends.nvidia.compiler")
    from triton.backends.nvidia.compiler import get_ptxas

    from rpt_fast.ops.aot import _ptxas

    for cc in TARGETS:
        assert _ptxas(cc) == get_ptxas(cc).path


def test_ctas_per_sm_follows_each_architecture():
    """sm_86/89/120 hold 1536 threads per SM and fewer blocks than sm_80/90, and 100 KB of
    shared memory; whichever limit binds first decides."""
    from rpt_fast.ops.aot import ctas_per_sm

    assert ctas_per_sm(32, 4, 0, 80) == 16  # 2048 threads / 128; registers allow 16 too
    assert ctas_per_sm(32, 4, 0, 86) == 12  # 1536 threads / 128
    assert [ctas_per_sm(16, 1, 0, cc) for cc in (86, 89, 90)] == [16, 24, 32]  # block limits
    assert ctas_per_sm(32, 4, 40 * 1024, 120) == 2  # 100 KB / (40 KB + 1 KB reserved)
    assert ctas_per_sm(32, 4, 40 * 1024, 90) == 5  # 228 KB / 41 KB
    assert ctas_per_sm(255, 8, 0, 90) == 1  # registers: 255 x 256 threads, 64 K per SM
