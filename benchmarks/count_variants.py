"""How many Triton kernel variants a GPU step compiles, counted on a CPU.

Each jitted function (a kernel's ``hinted`` and ``plain`` variants are two, with one name)
compiles once per specialisation: its constexpr values, warps, stages and further options, the
dtype of each pointer and whether it is 16-byte aligned, each integer's type and, unless the
kernel names it in ``do_not_specialize`` (``rpt_fast.ops.specialise``), whether it equals 1
or is divisible by 16: the spec ``rpt_fast.ops.aot`` compiles for a launch. A first GPU run
pays a compile (about 1-3 s on an H100) for every distinct one, so the time limits of
``gpu_check.sh`` are sized from these counts. Here the launchers run as on a GPU, on meta
tensors (shapes and dtypes only, so any size and bf16 too), with every Triton launch stubbed
(the interpreter's entry point), and each launch's specialisation is recorded.

  python benchmarks/count_variants.py selfcheck --dtype bfloat16     # python -m rpt_fast on CUDA
  python benchmarks/count_variants.py tests tests/test_gpu_kernels.py tests/test_gpu_cuda_graphs.py
  python benchmarks/count_variants.py bench --quick --dtype bf16      # bench_kernels.py's triton rows
  python benchmarks/count_variants.py cases "shared:100,2048,800:bf16;grouped:10,768,400:fp32"
  python benchmarks/count_variants.py --expect 64 selfcheck ...       # exit 1 above 64

``tests`` collects the files (nothing runs) and counts the (op, M, d, m, dtype) cases of the
tests parametrised by ``M, d, m`` (and ``grouped``, ``dtype``: shared op and every CUDA dtype
when absent); other tests are listed as not counted. ``--expect N`` exits 1 above N, so the
dry run of ``gpu_check.sh`` notices when its time limits no longer fit what a step compiles.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels become interpretable

REPO = Path(__file__).resolve().parents[1]
if not os.environ.get("RPT_FAST_INSTALLED"):
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from rpt_fast.ops.aot import spec_from_launch  # noqa: E402
from rpt_fast.ops.specialise import ALIGN_BYTES  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _unaligned(tensor: torch.Tensor) -> bool:
    # Meta tensors have no address: a view's offset in its (aligned) allocation stands in.
    address = tensor.storage_offset() * tensor.element_size() if tensor.is_meta else tensor.data_ptr()
    return address % ALIGN_BYTES != 0


def variant_key(kernel, args: tuple, kwargs: dict) -> tuple:
    """The specialisation Triton's launcher compiles for ``kernel[grid](*args, **kwargs)``: the
    jitted function itself (a kernel's ``hinted`` and ``plain`` variants share a name, not a
    cache), its constexprs, num_warps, num_stages and further options, each argument's type,
    and for the integers the kernel does not name in ``do_not_specialize`` (``unspecialised``)
    whether they equal 1 or are multiples of 16: ``rpt_fast.ops.aot.spec_from_launch``, the
    spec the AOT check compiles, which takes pointers as 16-byte aligned; the key also names
    the pointers that are not (the launchers hand kernels none)."""
    if not hasattr(kernel, "unspecialised"):
        raise TypeError(f"count_variants: {kernel.__name__} was not jitted by rpt_fast.ops.specialise."
                        "jit_variants, so its do_not_specialize set is unknown")
    signature = inspect.signature(kernel.fn)
    params = signature.parameters
    bound = signature.bind(*args, **{k: v for k, v in kwargs.items() if k in params})
    bound.apply_defaults()
    constexpr = {name for name, p in params.items() if "constexpr" in str(p.annotation)}
    options = {k: v for k, v in kwargs.items() if k not in params}
    spec = spec_from_launch(SimpleNamespace(
        kernel=kernel, name=kernel.__name__,
        args={k: v for k, v in bound.arguments.items() if k not in constexpr},
        constexprs={k: v for k, v in bound.arguments.items() if k in constexpr},
        num_warps=options.pop("num_warps", 4), num_stages=options.pop("num_stages", 3), options=options))
    unaligned = tuple(name for name, value in bound.arguments.items()
                      if isinstance(value, torch.Tensor) and name not in kernel.unspecialised
                      and _unaligned(value))
    return (kernel.__name__, kernel.variant, tuple(spec.signature.items()),
            tuple(sorted(spec.constexprs.items())), spec.divisible, spec.num_warps, spec.num_stages,
            tuple(sorted(spec.options.items())), unaligned)


@contextlib.contextmanager
def recording(seen: set):
    """Stubs every interpreted Triton launch, adding its variant key to ``seen``."""
    from triton.runtime.interpreter import InterpretedFunction

    original = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        seen.add(variant_key(self, args, kwargs))

    InterpretedFunction.run = run
    try:
        yield seen
    finally:
        InterpretedFunction.run = original


def run_case(grouped: bool, M: int, d: int, m: int, dtype: torch.dtype) -> None:
    """Forward and backward launches of one op through the Triton launchers (stubbed kernels),
    on contiguous meta tensors as the functional layer hands them over (no memory, any size)."""
    from rpt_fast import _library

    lead = (M,) if grouped else ()
    shapes = ((M, d), (*lead, m, d), (*lead, m), (*lead, d, m), (*lead, d), (*lead, d), (*lead, d))
    tensors = [torch.empty(s, device="meta", dtype=dtype) for s in shapes]
    dy = torch.empty((M, d), device="meta", dtype=dtype)
    fwd = _library.grouped_forward_impl if grouped else _library.residual_mlp_forward_impl
    bwd = _library.grouped_backward_impl if grouped else _library.residual_mlp_backward_impl
    x, w1, b1, w2, b2, ln_weight, ln_bias = tensors
    y, h, z, mean, rstd = fwd(*tensors, 1e-5, "triton")
    bwd(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd, "triton")


def count(cases) -> set:
    seen: set = set()
    with recording(seen):
        for case in cases:
            run_case(*case)
    return seen


def selfcheck_cases(argv: list[str]) -> list:
    """What ``python -m rpt_fast --device cuda ARGV`` runs through Triton (its CUDA-graph
    replay reuses the same variants)."""
    from rpt_fast import selfcheck

    args = selfcheck.parse_args(argv)
    return [(grouped, *shape, dtype) for dtype in args.dtype if dtype in CUDA_DTYPES
            for _, grouped, shape in args.shapes or selfcheck.CUDA_CASES]


def bench_cases(argv: list[str]) -> list:
    """The triton rows ``benchmarks/bench_kernels.py ARGV`` measures on a GPU."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_kernels

    args = bench_kernels.parse_args(argv)
    if args.provider and "triton" not in args.provider.split(","):
        return []
    runs, _ = bench_kernels.plan_runs(args, torch.device("cuda"))
    return sorted({(op == "grouped", *shape, DTYPES[dt]) for op, _, shape, dt, _ in runs}, key=str)


class _Collector:
    """A pytest plugin that keeps the parametrised (op, M, d, m, dtype) cases of collected tests."""

    def __init__(self):
        self.cases, self.uncounted = [], []

    def pytest_collection_modifyitems(self, items):
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            if not {"M", "d", "m"} <= set(params):
                self.uncounted.append(item.nodeid)
                continue
            dtypes = [params["dtype"]] if "dtype" in params else CUDA_DTYPES
            self.cases += [(bool(params.get("grouped", False)), params["M"], params["d"], params["m"], dt)
                           for dt in dtypes]


def test_cases(files: list[str]) -> tuple[list, list]:
    import pytest

    collector = _Collector()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *files], plugins=[collector])
    if code not in (0, 5):  # 5: nothing collected
        raise SystemExit(f"count_variants: collecting {files} failed (pytest exit code {code})")
    return sorted(set(collector.cases), key=str), collector.uncounted


def parse_cases(text: str) -> list:
    cases = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        op, shape, dtype = item.split(":")
        cases.append((op == "grouped", *map(int, shape.split(",")), DTYPES[dtype]))
    return cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--expect", type=int, default=None,
                    help="exit 1 when there are more variants than this (what a time limit was sized for)")
    ap.add_argument("what", choices=("selfcheck", "tests", "bench", "cases"))
    ap.add_argument("args", nargs=argparse.REMAINDER,
                    help="python -m rpt_fast's arguments (selfcheck), test files (tests), bench_kernels.py's "
                         "arguments (bench) or 'op:M,d,m:dtype;...' (cases)")
    args = ap.parse_args(argv)
    uncounted = []
    if args.what == "selfcheck":
        cases = selfcheck_cases(args.args)
    elif args.what == "bench":
        cases = bench_cases(args.args)
    elif args.what == "tests":
        cases, uncounted = test_cases(args.args)
    else:
        cases = parse_cases(" ".join(args.args))
    variants = count(cases)
    kernels = len({key[0] for key in variants})
    over = args.expect is not None and len(variants) > args.expect
    print(f"Triton variants, {args.what}: {len(variants)} ({kernels} kernels, {len(cases)} cases)"
          + (f"; not counted: {len(uncounted)} tests without M, d, m parameters" if uncounted else "")
          + (f"; MORE than the {args.expect} its time limit was sized for" if over else ""))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
