"""The ``native`` backend: the C++ kernels of ``csrc/`` as ``torch.ops.rpt_fast_native`` ops.

The extension is loaded on first use: the library ``setup.py`` built at install when it was
built from these very sources for this torch version, otherwise a just-in-time ninja build
(``torch.utils.cpp_extension.load``) cached under ``TORCH_EXTENSIONS_DIR``, whose library a later
process loads directly (the sources' digest names it). When neither works
(no compiler, say), :func:`unavailable_reason` says why, and warns once: ``auto`` then runs eager,
and an explicit ``backend="native"`` raises.

This module imports only torch and the standard library: ``setup.py`` loads it by path for
:func:`source_files`, :func:`source_digest` and the compiler flags.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path

import torch

__all__ = [
    "build_status",
    "unavailable_reason",
    "residual_mlp",
    "grouped_residual_mlp",
    "residual_mlp_forward",
    "residual_mlp_backward",
    "grouped_residual_mlp_forward",
    "grouped_residual_mlp_backward",
]

CXX_FLAGS = ["-O3", "-fopenmp"]  # OpenMP: at::parallel_for is header code, serial without it
LD_FLAGS = ["-fopenmp"]
PREBUILT_MODULE = "rpt_fast._native"
DIGEST_FILE = "_native.digest"  # next to the prebuilt library: the digest it was built from
_DTYPES = (torch.float32, torch.bfloat16, torch.float64)

_state: dict = {}  # "reason": None once loaded, else why not; set by the first load attempt
_lock = threading.Lock()  # a library registers its ops once per process


def source_dir() -> Path | None:
    """csrc/ shipped inside the installed package, else at the root of a source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "csrc", package.parent / "csrc"):
        if (candidate / "registration.cpp").is_file():
            return candidate
    return None


def source_files(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if p.suffix in (".cpp", ".h"))


def source_digest(src: Path) -> str:
    """Hash of the sources, flags and torch version a library must be built from to be reused."""
    h = hashlib.sha256(f"{torch.__version__}|{CXX_FLAGS}|{LD_FLAGS}".encode())
    for path in source_files(src):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _prebuilt_library(src: Path) -> str | None:
    """The library setup.py built, if it was built from ``src`` for this torch version."""
    try:
        spec = importlib.util.find_spec(PREBUILT_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    stamp = Path(spec.origin).with_name(DIGEST_FILE)
    if not stamp.is_file() or stamp.read_text().strip() != source_digest(src):
        return None
    return spec.origin


def _jit_library(src: Path) -> tuple[str, Path]:
    """(name, library path) of the just-in-time build of ``src`` under TORCH_EXTENSIONS_DIR."""
    from torch.utils import cpp_extension

    name = f"rpt_fast_native_{source_digest(src)[:16]}"
    return name, Path(cpp_extension._get_build_directory(name, verbose=False)) / f"{name}.so"


def build_status() -> tuple[bool, str]:
    """(ready, what): whether the extension can load without compiling, and from where; builds
    nothing (``python -m rpt_fast`` says so before a first use compiles it)."""
    if "reason" in _state:
        return _state["reason"] is None, _state["reason"] or "loaded"
    src = source_dir()
    if src is None:
        return False, "the C++ sources (csrc/) are not shipped with this installation"
    library = _prebuilt_library(src)
    if library is not None:
        return True, f"built at install ({library})"
    path = _jit_library(src)[1]
    if path.is_file():
        return True, f"built ({path})"
    return False, f"not built yet (the first use compiles it into {path.parent}, about a minute)"


def _jit_build(src: Path) -> None:
    from torch.utils import cpp_extension

    name, library = _jit_library(src)
    if library.is_file():  # built earlier from these very sources (the digest names it)
        try:
            torch.ops.load_library(str(library))
            return
        except OSError:  # a build cut short: let ninja redo it
            pass
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler found (CXX={compiler!r} is not on PATH)")
    if not cpp_extension.is_ninja_available():
        raise RuntimeError("ninja is not installed (pip install ninja)")
    if not library.is_file():
        print(
            f"rpt_fast: compiling the native C++ extension into {library.parent} (once, about a minute)",
            file=sys.stderr,
            flush=True,
        )
    cpp_extension.load(
        name=name,
        sources=[str(p) for p in source_files(src) if p.suffix == ".cpp"],
        extra_cflags=CXX_FLAGS,
        extra_ldflags=LD_FLAGS,
        is_python_module=False,
        verbose=False,
    )


def _load() -> str | None:
    """Loads the extension once per process; returns None or why it cannot be loaded."""
    if "reason" in _state:
        return _state["reason"]
    with _lock:
        if "reason" not in _state:
            _state["reason"] = _attempt_load()
    return _state["reason"]


def _attempt_load() -> str | None:
    src = source_dir()
    reason = None
    if src is None:
        reason = "the C++ sources (csrc/) are not shipped with this installation"
    else:
        library = _prebuilt_library(src)
        try:
            if library is not None:
                torch.ops.load_library(library)
            else:
                _jit_build(src)
            _register_fakes()
        except Exception as exc:  # compiler missing or failing: report, never crash the caller
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = f"the native extension could not be built or loaded: {first_line}"
    if reason is not None:
        warnings.warn(
            f"rpt_fast: {reason}; backend='auto' falls back to eager on CPU", RuntimeWarning, 4
        )
    return reason


def unavailable_reason(x: torch.Tensor) -> str | None:
    if x.device.type != "cpu":
        return f"the native backend runs on CPU tensors, got a tensor on {x.device}"
    if x.dtype not in _DTYPES:
        return f"the native kernels take float32, bfloat16 or float64, got {x.dtype}"
    return _load()


def _check_devices(names: str, *tensors: torch.Tensor) -> None:
    """A call mixing devices (CPU with meta, say) reaches the fake kernel: refuse it there."""
    for name, t in zip(names.split(), tensors):
        if t.device != tensors[0].device:
            raise RuntimeError(f"{name}: expected device {tensors[0].device} (the device of "
                               f"{names.split()[0]}), got {t.device}")


def _register_fakes() -> None:
    """Shape-only implementations for FakeTensor / torch.compile (symbolic sizes welcome)."""
    from .fakes import gradients_like, stats_dtype  # here, not at the top: setup.py runs this file alone

    def forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
        _check_devices("x w1 b1 w2 b2 ln_weight ln_bias", x, w1, b1, w2, b2, ln_weight, ln_bias)
        rows, m = x.shape[0], w1.shape[-2]
        stats = x.new_empty((rows,), dtype=stats_dtype(x))
        return (torch.empty_like(x), x.new_empty((rows, m)), torch.empty_like(x), stats,
                torch.empty_like(stats))

    def backward(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd):
        _check_devices("dy x w1 w2 b2 ln_weight h z mean rstd", dy, x, w1, w2, b2, ln_weight, h,
                       z, mean, rstd)
        return gradients_like(x, w1, w2, b2, ln_weight)

    def with_autograd(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
        return forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps)[0]

    for prefix in ("", "grouped_"):
        torch.library.register_fake(f"rpt_fast_native::{prefix}residual_mlp_forward")(forward)
        torch.library.register_fake(f"rpt_fast_native::{prefix}residual_mlp_backward")(backward)
        torch.library.register_fake(f"rpt_fast_native::{prefix}residual_mlp")(with_autograd)


def residual_mlp(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
    """y of the shared op with its autograd in C++ (csrc/autograd.cpp): no Python runs between
    the forward and backward kernels, which matters at prompt shapes."""
    return torch.ops.rpt_fast_native.residual_mlp(x, w1, b1, w2, b2, ln_weight, ln_bias, eps)


def grouped_residual_mlp(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
    """y of the grouped op with its autograd in C++, as :func:`residual_mlp`."""
    return torch.ops.rpt_fast_native.grouped_residual_mlp(
        x, w1, b1, w2, b2, ln_weight, ln_bias, eps
    )


def residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
    return torch.ops.rpt_fast_native.residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps)


def residual_mlp_backward(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd):
    return torch.ops.rpt_fast_native.residual_mlp_backward(
        dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd
    )


def grouped_residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps):
    return torch.ops.rpt_fast_native.grouped_residual_mlp_forward(
        x, w1, b1, w2, b2, ln_weight, ln_bias, eps
    )


def grouped_residual_mlp_backward(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd):
    return torch.ops.rpt_fast_native.grouped_residual_mlp_backward(
        dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd
    )
