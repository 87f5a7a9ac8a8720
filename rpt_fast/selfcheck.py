"""``python -m rpt_fast``: is this installation correct here? Versions, the device, what
``backend="auto"`` picks, whether the native extension is built; then every backend that can
run here against the float64 reference (``rpt_fast.ops.reference``): the shared and grouped
ops, forward and all seven gradients, each dtype the backend serves on the device, at a
split-K, a tiled and an odd shape, and on CUDA a CUDA-graph replay. One line per backend with
its worst error against its tolerance; exit status 1 when any check fails.

``rpt-train`` runs :func:`check_case` for the backend, dtype and shape it trains with before
its first step. The tolerances (:func:`tolerances`) are the ones the test suite's GPU tier
holds the kernels to.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import platform
import time
from dataclasses import dataclass

import torch

from . import __version__, _backends
from .functional import grouped_residual_mlp, residual_mlp
from .ops import native
from .ops.precision import fp32_matmul_allows_tf32
from .ops.reference import grouped_residual_mlp_reference, residual_mlp_reference

GRAD_NAMES = ("dx", "dw1", "db1", "dw2", "db2", "dln_weight", "dln_bias")
DTYPES = (torch.bfloat16, torch.float32, torch.float16, torch.float64)  # bf16 first: no CPU test checks it
# (label, grouped, (rows, d, m)), shared and grouped interleaved (a run cut short has both).
# Up to 128 rows the shared op's Triton kernels split their weight reductions (split-K);
# above, tiles. "odd": no dimension a multiple of 16, so Triton compiles its unaligned
# variants. On the CPU small enough for the Triton interpreter.
CASES = (
    ("split-K", False, (20, 96, 80)),
    ("grouped", True, (8, 96, 80)),
    ("tiled", False, (200, 64, 48)),
    ("grouped odd", True, (5, 100, 45)),
    ("odd", False, (37, 100, 45)),
)
# On CUDA prompt-sized shapes; the split-K, tiled and grouped ones are also the GPU tier's
# (tests/test_gpu_kernels.py), so a GPU check compiles their Triton variants once.
CUDA_CASES = (
    ("split-K", False, (7, 768, 800)),
    ("grouped", True, (7, 768, 800)),
    ("tiled", False, (4096, 1024, 256)),
    ("grouped odd", True, (5, 100, 45)),
    ("odd", False, (37, 100, 45)),
)
PACKAGES = ("torch", "triton", "transformers", "deepspeed", "peft", "numpy")
TF32_EPS = 2.0**-10  # fp32 dots with TF32 round their inputs to a 10-bit mantissa


def tolerances(dtype: torch.dtype, tf32: bool = False) -> tuple[float, float]:
    """(output, gradient) bounds on the relative Frobenius error against float64 on the same
    rounded inputs. Storing a value in ``dtype`` costs eps/2 at most, ~0.3 eps rms: the output
    passes through about two such roundings (h, y), a gradient about four (the stored
    intermediates and the result); fp32 accumulation over up to 8192 terms adds ~1e-6. So bf16
    gets ~1e-2 and ~2e-2, fp16 ~1.3e-3 and ~2.6e-3, fp32 1e-5 and 2e-5 (TF32 dots: ~1.3e-3 and
    ~2.6e-3): a bf16 accumulation or a dropped LayerNorm gain in the backward is many times over
    these. float64 runs in float64 throughout: 1e-10."""
    if dtype == torch.float64:
        return 1e-10, 1e-10
    eps = TF32_EPS if tf32 and dtype == torch.float32 else torch.finfo(dtype).eps
    return 1.3 * eps + 1e-5, 2.6 * eps + 2e-5


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (Frobenius, in float64); NaN when ``got`` has NaN elements."""
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


@dataclass
class Result:
    """One case on one backend: its worst output or gradient, relative to its tolerance."""

    backend: str
    label: str
    grouped: bool
    shape: tuple
    dtype: torch.dtype
    device: str
    worst: str  # "y", "dx", ..., or "graph replay"
    error: float
    tolerance: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance  # False for NaN

    @property
    def ratio(self) -> float:
        return self.error / self.tolerance if self.ok else float("inf")

    def describe(self) -> str:
        op = "grouped" if self.grouped else "shared"
        dtype = _name(self.dtype)
        return (f"{self.backend}, {dtype}, {op} op at {self.shape} on {self.device}: worst error "
                f"{self.error:.1e} in {self.worst} (tolerance {self.tolerance:.1e}){self.note}")


def make_inputs(grouped: bool, shape: tuple, dtype: torch.dtype, device, seed: int = 0):
    """Fresh random (never zero) inputs in ``dtype`` and an upstream gradient, as the tests draw
    them; the reference runs in float64 on these same rounded values."""
    rows, d, m = shape
    g = torch.Generator().manual_seed(seed)
    lead = (rows,) if grouped else ()

    def randn(*size):
        return torch.randn(*size, generator=g, dtype=torch.float64)

    tensors = (randn(rows, d), randn(*lead, m, d) / d**0.5, 0.1 * randn(*lead, m), randn(*lead, d, m) / m**0.5,
               0.1 * randn(*lead, d), 1 + 0.1 * randn(*lead, d), 0.1 * randn(*lead, d))
    return [t.to(device=device, dtype=dtype) for t in tensors], randn(rows, d).to(device=device, dtype=dtype)


@contextlib.contextmanager
def poisoned_allocations():
    """Fresh ATen allocations are NaN-filled, so an element a kernel never writes fails (the
    tests' ``poisoned`` fixture too)."""
    previous = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _value_and_grads(op, tensors, dy, **kwargs) -> list[torch.Tensor]:
    leaves = [t.detach().requires_grad_() for t in tensors]
    y = op(*leaves, **kwargs)
    return [y.detach(), *torch.autograd.grad(y, leaves, dy)]


def _ops(grouped: bool):
    if grouped:
        return grouped_residual_mlp, grouped_residual_mlp_reference
    return residual_mlp, residual_mlp_reference


def check_case(backend: str, grouped: bool, shape: tuple, dtype: torch.dtype, device, label: str = "",
               graph: bool = False, seed: int = 0) -> Result:
    """Runs one op through ``backend`` (forward and backward) against the float64 reference;
    ``graph``: also replays forward + backward from a CUDA graph, which must give the same bits.
    Raises :class:`rpt_fast.BackendUnavailableError` when the backend cannot serve the call."""
    device = torch.device(device)
    op, reference = _ops(grouped)
    tensors, dy = make_inputs(grouped, shape, dtype, device, seed)
    want = _value_and_grads(reference, [t.double() for t in tensors], dy.double())
    # Poison the op's allocations; not the eager backend's on CUDA (cuBLAS refuses deterministic mode).
    poison = poisoned_allocations() if backend != "eager" or device.type != "cuda" else contextlib.nullcontext()
    with poison:
        got = _value_and_grads(op, tensors, dy, backend=backend)
    tf32 = device.type == "cuda" and backend != "native" and fp32_matmul_allows_tf32()
    out_tol, grad_tol = tolerances(dtype, tf32)
    note = " with TF32" if tf32 and dtype == torch.float32 else ""
    results = [Result(backend, label, grouped, tuple(shape), dtype, str(device), name, relative_error(g, w),
                      out_tol if name == "y" else grad_tol, note)
               for name, g, w in zip(("y", *GRAD_NAMES), got, want)]
    worst = max(results, key=lambda r: r.ratio)  # the first failing one, else the closest to its bound
    if graph and worst.ok:
        replay = _graph_replay(op, tensors, dy, backend, got)
        if replay is not None:
            worst.worst, worst.error, worst.note = "graph replay", float("nan"), f": {replay}"
    return worst


def _graph_replay(op, tensors, dy, backend, expected) -> str | None:
    """Forward + backward captured in a CUDA graph (after a warm-up on a side stream, as
    torch.cuda.graphs' docs do), outputs poisoned, replayed: None when the replay gives the
    eager launches' bits, else what differed."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]

    def step():
        y = op(*leaves, backend=backend)
        return [y, *torch.autograd.grad(y, leaves, dy)]

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = step()
        for _ in range(2):
            for out in outs:
                out.detach().fill_(float("nan"))
            graph.replay()
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - a capture failure is this check's result
        return f"capture failed ({type(exc).__name__}: {str(exc).strip()[:120]})"
    differ = [name for name, o, e in zip(("y", *GRAD_NAMES), outs, expected) if not torch.equal(o.detach(), e)]
    return f"replayed {', '.join(differ)} differ from eager launches" if differ else None


@dataclass
class BackendReport:
    backend: str
    device: str
    results: list
    skipped: list  # (dtype, why it was not checked)
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def line(self) -> str:
        where = f"{self.backend:6s} on {self.device:6s}"
        if not self.results:
            return f"SKIP {where} {self.skips()}"
        worst = max(self.results, key=lambda r: r.ratio)
        dtypes = sorted({_name(r.dtype) for r in self.results}, key=_dtype_order)
        return (f"{'PASS' if self.ok else 'FAIL'} {where} worst {worst.error:.1e} / tolerance "
                f"{worst.tolerance:.1e} ({worst.worst}, {worst.label}, {_name(worst.dtype)}); "
                f"{len(self.results)} cases in {', '.join(dtypes)}; {self.seconds:.1f} s")

    def skips(self) -> str:
        """The dtypes not checked, grouped by the reason."""
        by_reason: dict[str, list] = {}
        for dtype, reason in self.skipped:
            by_reason.setdefault(reason, []).append(_name(dtype))
        return "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_order(name: str) -> int:
    return [_name(d) for d in DTYPES].index(name)


def _reason(backend: str, device: torch.device, dtype: torch.dtype, d: int) -> str | None:
    """Why ``backend`` does not serve (., d) ``dtype`` tensors on ``device`` (None: it does).

    Eager, the reference itself, is checked where it is the specification (float32, float64)
    and wherever ``auto`` falls back to it here; in bfloat16 or float16 elsewhere it only
    rounds the specification's intermediates, which no backend here would run."""
    if backend != "eager":
        return _backends._unavailable(backend, str(device), _name(dtype), d)
    probe = torch.empty((0, d), device=device, dtype=dtype)
    if dtype in (torch.float32, torch.float64) or _backends.resolve_backend("auto", probe) == "eager":
        return None
    return "backend=\"auto\" does not fall back to eager for it here"


def check_backend(backend: str, device, cases=None, dtypes=DTYPES, on_result=None) -> BackendReport:
    """Every case in every dtype ``backend`` serves on ``device`` (default cases: ``CASES`` on
    the CPU, ``CUDA_CASES`` on CUDA, where a kernel backend's first case of each dtype is also
    replayed from a CUDA graph); ``on_result(result, seconds)`` is called as each case ends."""
    device = torch.device(device)
    cases = cases or (CUDA_CASES if device.type == "cuda" else CASES)
    start = time.perf_counter()
    results, skipped = [], []
    for dtype in dtypes:
        reason = _reason(backend, device, dtype, max(shape[1] for _, _, shape in cases))
        if reason is not None:
            skipped.append((dtype, reason))
            continue
        for i, (label, grouped, shape) in enumerate(cases):
            began = time.perf_counter()
            graph = device.type == "cuda" and i == 0 and backend != "eager"  # our kernels, not cuBLAS
            results.append(check_case(backend, grouped, shape, dtype, device, label, graph=graph))
            if on_result is not None:
                on_result(results[-1], time.perf_counter() - began)
    return BackendReport(backend, str(device), results, skipped, time.perf_counter() - start)


def _print_result(result: Result, seconds: float) -> None:
    print(f"    {'ok  ' if result.ok else 'FAIL'} {result.label}: {result.describe()} [{seconds:.1f} s]", flush=True)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> list[str]:
    """Versions and the devices, as bug reports need them."""
    versions = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
    lines = [f"rpt-fast {__version__}, python {platform.python_version()}, {versions}",
             f"torch built with CUDA {torch.version.cuda or 'none'}; CPU: {platform.machine()}, "
             f"{torch.get_num_threads()} threads"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                         f"{p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("cuda: no CUDA device visible")
    return lines


def auto_choices(device: torch.device) -> str:
    """What ``backend="auto"`` runs for each dtype on ``device`` (why, where it falls back)."""
    parts = []
    for dtype in DTYPES:
        probe = torch.empty((0, 768), device=device, dtype=dtype)
        chosen = _backends.resolve_backend("auto", probe)
        candidate = "triton" if device.type == "cuda" else "native"
        note = "" if chosen == candidate else f" ({candidate}: {_reason(candidate, device, dtype, 768)})"
        parts.append(f"{_name(dtype)} -> {chosen}{note}")
    return f'backend="auto" on {device}: ' + "; ".join(parts)


def plan(devices: list[torch.device], backends: list[str] | None) -> list[tuple[str, torch.device]]:
    """(backend, device) pairs to check: Triton on CUDA (and on the CPU under TRITON_INTERPRET=1),
    native on the CPU, eager everywhere; ``backends`` keeps only those named."""
    pairs = []
    for device in devices:
        names = ("triton", "eager") if device.type == "cuda" else ("native", "triton", "eager")
        pairs += [(name, device) for name in names if backends is None or name in backends]
    return pairs


def _shapes(text: str) -> tuple:
    """``--shapes "M,d,m;..."``: both ops at each shape."""
    try:
        shapes = [tuple(int(v) for v in item.split(",")) for item in text.split(";") if item.strip()]
        assert shapes and all(len(s) == 3 and min(s) >= 1 for s in shapes)
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"expected 'M,d,m;M,d,m' of positive ints, got {text!r}") from None
    return tuple(("grouped" if grouped else "shared", grouped, s) for s in shapes for grouped in (False, True))


def _dtypes(text: str) -> tuple:
    names = {_name(d): d for d in DTYPES}
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in names]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(names)}, got {text!r}")
    return tuple(names[item] for item in chosen)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m rpt_fast", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                   help="where to check (default: the CPU, and CUDA when a GPU is visible)")
    p.add_argument("--backend", default=None,
                   help="comma list of backends to check: triton, native, eager (default: all that run here)")
    p.add_argument("--shapes", type=_shapes, default=None, metavar="M,d,m;...",
                   help="check the shared and the grouped op at these shapes instead of the built-in cases")
    p.add_argument("--dtype", type=_dtypes, default=DTYPES, metavar="DTYPE,...",
                   help="check only these dtypes (bfloat16, float32, float16, float64; default: all)")
    p.add_argument("--verbose", "-v", action="store_true", help="a line per case as it ends")
    args = p.parse_args(argv)
    if args.backend is not None:
        args.backend = [b.strip() for b in args.backend.split(",")]
        unknown = sorted(set(args.backend) - {"triton", "native", "eager"})
        if unknown:
            p.error(f"--backend: expected triton, native or eager, got {', '.join(unknown)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    for line in environment():
        print(line, flush=True)
    devices = [torch.device(name) for name in ("cpu", "cuda")
               if args.device in ("all", name) and (name == "cpu" or torch.cuda.is_available())]
    pairs = plan(devices, args.backend)
    ready, status = native.build_status()
    print(f"native extension: {status}", flush=True)
    if not ready and status.startswith("not built") and torch.device("cpu") in devices:
        print("native extension: building it now (backend=\"auto\" runs it on the CPU)", flush=True)
    for device in devices:
        print(auto_choices(device), flush=True)
    for device in devices:
        cases = args.shapes or (CUDA_CASES if device.type == "cuda" else CASES)
        shapes = "; ".join(f"{label} {shape}" for label, _, shape in cases)
        print(f"cases on {device}: {shapes}; forward and 7 gradients each, relative Frobenius error against "
              "float64" + ("; Triton's first also replayed from a CUDA graph" if device.type == "cuda" else ""),
              flush=True)
    reports = []
    for backend, device in pairs:
        report = check_backend(backend, device, args.shapes, args.dtype, _print_result if args.verbose else None)
        reports.append(report)
        print(report.line(), flush=True)
        if report.results and report.skipped:
            print(f"    not checked: {report.skips()}", flush=True)
        for result in report.results:
            if not result.ok and not args.verbose:
                print(f"    FAILED {result.label}: {result.describe()}", flush=True)
    failed = [r for r in reports if not r.ok]
    checked = sum(len(r.results) for r in reports)
    print(f"self-check {'FAILED' if failed else 'passed'}: {checked} cases on "
          f"{sum(bool(r.results) for r in reports)} backend(s) in {time.perf_counter() - started:.1f} s", flush=True)
    return 1 if failed else 0
