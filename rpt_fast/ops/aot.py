"""Ahead-of-time compile of every shipped Triton config, with a resource check; no GPU needed.

``python -m rpt_fast.ops.aot`` compiles each kernel spec of the modules in ``KERNEL_MODULES``
for sm_80 and sm_90 in fp32, fp16 and bf16 and prints a table (``--json``: one JSON list) of
registers, LOCAL and STACK bytes (the Triton wheel's ``cuobjdump --dump-resource-usage``),
spill stores + loads (``ptxas -v``, run when there is a stack frame: ptxas may spill into
one while LOCAL stays 0), dynamic shared memory (the compiled metadata) against the target's
limit, and CTAs per SM (from registers, warps and shared memory). It exits 1 when a config
fails to compile, spills, or needs more shared memory than the target allows.

It compiles what runs: a spec made by :func:`spec_from_launch` from a real launch plan
(``rpt_fast.ops.launches.Launch``, built on meta tensors at the shapes that matter) carries
the specialisation Triton's launcher applies at run time: integer arguments equal to 1
become constants, integers divisible by 16 and 16-byte-aligned pointers (the launchers hand
kernels nothing else) get ``tt.divisibility = 16``, except the integers a kernel names in
``do_not_specialize`` (its ``unspecialised``; ``rpt_fast.ops.specialise`` says which, and why
that leaves two variants per kernel and config). The ``ptxas`` is the one the
installed Triton itself uses for the target (``triton.backends.nvidia.compiler.get_ptxas``:
triton 3.9 compiles sm_90 with its CUDA 13 ``ptxas-blackwell``, 3.6 with ``ptxas``; both
honour ``TRITON_PTXAS_PATH``/``TRITON_PTXAS_BLACKWELL_PATH``).

Convention for a kernel module: it exposes ``aot_specs(dtype: torch.dtype) -> list[KernelSpec]``
listing every (kernel, constexpr values, num_warps, num_stages) its launchers can pick for
inputs of that dtype. ``signature`` maps every parameter of the kernel to its Triton type
("*fp16", "i32", "fp32", ...), or "constexpr" for the parameters given in ``constexprs``;
``make_signature`` builds it, ``spec_from_launch`` derives all of it from a launch. Pointers
are always compiled as 16-byte aligned; ``divisible`` names the integer parameters compiled
as multiples of 16.

The compile needs real ``@triton.jit`` functions: run it with ``TRITON_INTERPRET`` unset.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import Any, NamedTuple

KERNEL_MODULES = ("rpt_fast.ops.triton_residual_mlp", "rpt_fast.ops.triton_grouped")
TARGETS = (80, 90)
DTYPES = ("float32", "float16", "bfloat16")


class ArchLimits(NamedTuple):
    """What one SM of a compute capability holds at once."""

    threads: int
    blocks: int
    shared: int  # bytes of shared memory
    shared_reserved_per_block: int  # bytes the driver keeps per resident block


# The CUDA C++ Programming Guide's "Technical Specifications per Compute Capability", as NVIDIA's
# CCCL encodes it (libcudacxx, cuda/__device/arch_traits.h). Every one of these has 64 K 32-bit
# registers per SM, allocated per warp in units of 256; a block may opt in to all the shared
# memory but the reserved part. sm_86/87/89/120 hold 1536 threads, not 2048, and fewer blocks.
ARCH_LIMITS = {
    75: ArchLimits(1024, 16, 64 * 1024, 0),
    80: ArchLimits(2048, 32, 164 * 1024, 1024),
    86: ArchLimits(1536, 16, 100 * 1024, 1024),
    87: ArchLimits(1536, 16, 164 * 1024, 1024),
    89: ArchLimits(1536, 24, 100 * 1024, 1024),
    90: ArchLimits(2048, 32, 228 * 1024, 1024),
    100: ArchLimits(2048, 32, 228 * 1024, 1024),
    120: ArchLimits(1536, 24, 100 * 1024, 1024),
}
REGISTERS_PER_SM = 65536
REGISTER_UNIT = 256
# Dynamic shared memory one block may opt in to, in bytes (163 KB on sm_80, 227 KB on sm_90).
SHARED_LIMIT = {cc: a.shared - a.shared_reserved_per_block for cc, a in ARCH_LIMITS.items()}


class KernelSpec(NamedTuple):
    """One compile of one kernel: what a launcher can pick for one dtype."""

    name: str  # readable and unique within the module's specs for a dtype
    kernel: Any  # the @triton.jit function
    signature: dict  # parameter name -> Triton type string or "constexpr"
    constexprs: dict  # parameter name -> value
    num_warps: int
    num_stages: int
    divisible: tuple = ()  # integer parameters compiled as multiples of 16
    options: dict = {}  # further compile options (``maxnreg``), as the launch passes them


TRITON_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int32": "i32"}


def triton_type(dtype) -> str:
    """"fp32", "fp16", "bf16" (or "i32") for a torch dtype."""
    return TRITON_TYPES[str(dtype).removeprefix("torch.")]


def make_signature(kernel, pointers: dict, constexprs: dict, scalars: dict | None = None) -> dict:
    """Signature of ``kernel``: ``pointers`` (name -> "*fp16"...), "constexpr" for ``constexprs``,
    ``scalars`` (name -> "fp32"...), "i32" for every other parameter."""
    scalars = scalars or {}
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
        else:
            signature[name] = scalars.get(name, "i32")
    unknown = (set(pointers) | set(constexprs) | set(scalars)) - set(signature)
    if unknown:
        raise ValueError(f"{kernel.__name__}: no parameters named {sorted(unknown)}")
    return signature


def spec_from_launch(launch, name: str | None = None) -> KernelSpec:
    """The spec Triton's launcher compiles for ``launch`` (see the module docstring)."""
    import torch

    signature, constexprs, divisible = {}, dict(launch.constexprs), []
    unspecialised = launch.kernel.unspecialised
    for param in launch.kernel.arg_names:
        if param in constexprs:
            signature[param] = "constexpr"
            continue
        value = launch.args[param]
        if isinstance(value, torch.Tensor):
            signature[param] = "*" + triton_type(value.dtype)
        elif isinstance(value, bool):
            signature[param] = "i1"
        elif isinstance(value, int):
            if value == 1 and param not in unspecialised:
                signature[param] = "constexpr"
                constexprs[param] = 1
                continue
            signature[param] = "i32" if -2**31 <= value < 2**31 else "i64"
            if value % 16 == 0 and param not in unspecialised:
                divisible.append(param)
        elif isinstance(value, float):
            signature[param] = "fp32"
        else:
            raise TypeError(f"{launch.kernel.__name__}: argument {param}={value!r} has no Triton type")
    return KernelSpec(name or launch.name, launch.kernel, signature, constexprs,
                      launch.num_warps, launch.num_stages, tuple(divisible), launch.options)


def _nvidia_tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _ptxas(cc: int) -> str:
    """The ptxas the installed Triton compiles sm_``cc`` with."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError:  # older triton: one bundled ptxas
        return _nvidia_tool("ptxas")
    return get_ptxas(cc).path


def _ast_source(spec: KernelSpec):
    from triton.compiler import ASTSource

    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, (name, ty) in enumerate(spec.signature.items())
        if ty.startswith("*") or name in spec.divisible
    }
    params = inspect.signature(ASTSource.__init__).parameters
    if "constexprs" in params:  # triton >= 3.3
        return ASTSource(spec.kernel, spec.signature, constexprs=spec.constexprs, attrs=aligned)
    # triton 3.2: constants by name, no alignment hints in this form
    return ASTSource(spec.kernel, spec.signature, constants=spec.constexprs)


def _resource_usage(cubin: bytes, ptx: str, cc: int) -> dict:
    """REG, LOCAL, SHARED, STACK from cuobjdump, and SPILL bytes. Spills live in local memory:
    LOCAL, or a STACK frame (where ptxas also puts them while LOCAL stays 0); a frame may also
    serve calls, so when there is one, ``ptxas -v`` on the PTX tells the spill stores + loads."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        cubin_path, ptx_path = os.path.join(tmp, "k.cubin"), os.path.join(tmp, "k.ptx")
        with open(cubin_path, "wb") as f:
            f.write(cubin)
        dump = subprocess.run(
            [_nvidia_tool("cuobjdump"), "--dump-resource-usage", cubin_path],
            capture_output=True, text=True, check=True,
        ).stdout
        usage = {k: int(v) for k, v in re.findall(r"(REG|LOCAL|STACK|SHARED):(\d+)", dump)}
        if "REG" not in usage:
            raise RuntimeError(f"cannot read cuobjdump's resource usage: {dump!r}")
        usage["SPILL"] = 0
        if usage.get("STACK", 0):
            with open(ptx_path, "w") as f:
                f.write(ptx)
            log = subprocess.run(
                [_ptxas(cc), "-v", f"--gpu-name={sm_arch_from_capability(cc)}",
                 ptx_path, "-o", os.path.join(tmp, "v.o")],
                capture_output=True, text=True, check=True,
            ).stderr
            spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
            if spills is None:
                raise RuntimeError(f"cannot read ptxas -v: {log!r}")
            usage["SPILL"] = int(spills.group(1)) + int(spills.group(2))
    return usage


def compile_one(module_name: str, dtype_name: str, index: int, cc: int) -> dict:
    """Compiles spec ``index`` of ``module_name.aot_specs(dtype)`` for sm_``cc``; one table row."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget

    spec = importlib.import_module(module_name).aot_specs(getattr(torch, dtype_name))[index]
    row = {
        "module": module_name, "name": spec.name, "kernel": spec.kernel.__name__,
        "dtype": dtype_name, "cc": cc, "num_warps": spec.num_warps,
        "num_stages": spec.num_stages, "shared_limit": SHARED_LIMIT[cc],
    }
    try:
        compiled = triton.compile(
            _ast_source(spec),
            target=GPUTarget("cuda", cc, 32),
            options={"num_warps": spec.num_warps, "num_stages": spec.num_stages, **spec.options},
        )
        usage = _resource_usage(compiled.asm["cubin"], compiled.asm["ptx"], cc)
    except Exception as exc:  # reported per config; the run fails at the end
        return {**row, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    shared = int(compiled.metadata.shared) + usage.get("SHARED", 0)
    spill = usage["SPILL"] + usage.get("LOCAL", 0)
    return {
        **row, "registers": usage["REG"], "spill_bytes": spill,
        "stack_bytes": usage.get("STACK", 0), "shared_bytes": shared,
        "ctas_per_sm": ctas_per_sm(usage["REG"], spec.num_warps, shared, cc),
        "ok": spill == 0 and shared <= SHARED_LIMIT[cc], "error": None,
    }


def ctas_per_sm(registers: int, num_warps: int, shared: int, cc: int) -> int:
    """Blocks of this kernel one SM of compute capability ``cc`` holds at once: the tightest of
    registers, threads, shared memory and the block limit (CUDA occupancy rules, without the
    register-file bank details)."""
    arch = ARCH_LIMITS[cc]
    per_warp = -(-registers * 32 // REGISTER_UNIT) * REGISTER_UNIT
    limits = [arch.blocks, arch.threads // (32 * num_warps)]
    if per_warp:
        limits.append(REGISTERS_PER_SM // (per_warp * num_warps))
    limits.append(arch.shared // (shared + arch.shared_reserved_per_block))
    return min(limits)


def _count_specs(module_name: str, dtype_name: str) -> int:
    import torch

    return len(importlib.import_module(module_name).aot_specs(getattr(torch, dtype_name)))


def run(modules=KERNEL_MODULES, dtypes=DTYPES, targets=TARGETS, workers: int = 2) -> list[dict]:
    """Compiles every spec of ``modules`` for every dtype and target; returns the table rows."""
    jobs = [
        (module, dtype, index, cc)
        for module in modules
        for dtype in dtypes
        for index in range(_count_specs(module, dtype))
        for cc in targets
    ]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(compile_one, *zip(*jobs)))


def _table(rows: list[dict]) -> str:
    lines = [f"{'ok':4} {'cc':>3} {'dtype':9} {'warps':>5} {'stages':>6} {'regs':>5} "
             f"{'spill':>6} {'stack':>6} {'shared':>7} / limit  {'CTA/SM':>6}  name"]
    for r in rows:
        if r["error"]:
            lines.append(f"FAIL {r['cc']:>3} {r['dtype']:9} {r['name']}: {r['error']}")
            continue
        lines.append(
            f"{'ok' if r['ok'] else 'FAIL':4} {r['cc']:>3} {r['dtype']:9} {r['num_warps']:>5} "
            f"{r['num_stages']:>6} {r['registers']:>5} {r['spill_bytes']:>6} {r['stack_bytes']:>6} "
            f"{r['shared_bytes']:>7} / {r['shared_limit']} {r['ctas_per_sm']:>6}  "
            f"{r['module'].rsplit('.', 1)[-1]}: {r['name']}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    parser.add_argument("--modules", nargs="+", default=list(KERNEL_MODULES))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--targets", nargs="+", type=int, default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    rows = run(args.modules, args.dtypes, args.targets, args.workers)
    print(json.dumps(rows, indent=1) if args.json else _table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
