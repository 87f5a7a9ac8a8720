"""Backend choice: which implementation serves a call, and why another one cannot."""

from __future__ import annotations

import torch

from .ops import BACKENDS, load_backend


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot serve this call; the message says why."""


_REASONS: dict[tuple[str, str, str, int], str | None] = {}


@torch._dynamo.assume_constant_result
def _unavailable(name: str, device: str, dtype: str, d: int) -> str | None:
    """Why backend ``name`` cannot serve (., d) tensors of ``dtype`` on ``device`` (None: it can).

    Plain values in, a constant out: torch.compile runs it once while tracing instead of
    tracing through backend imports and builds. Cached, as the answer depends on these values
    only, so eager calls skip the import and the probe allocation.
    """
    key = (name, device, dtype, d)
    if key not in _REASONS:
        _REASONS[key] = _reason(*key)
    return _REASONS[key]


def _reason(name: str, device: str, dtype: str, d: int) -> str | None:
    try:
        module = load_backend(name)
    except ImportError as exc:  # triton not installed, for instance
        return f"cannot import the {name} backend ({exc})"
    probe = torch.empty((0, d), device=device, dtype=getattr(torch, dtype))
    return module.unavailable_reason(probe)


@torch._dynamo.assume_constant_result
def _max_width(name: str) -> int | None:
    """The widest d backend ``name`` takes: ``MAX_D`` of a backend module that holds rows in
    registers (Triton), None when any width runs."""
    try:
        return getattr(load_backend(name), "MAX_D", None)
    except ImportError:
        return None


def _spec(name: str, x: torch.Tensor) -> tuple[str, str, int]:
    """(device, dtype, d) of ``x`` as ``_unavailable`` takes them for backend ``name``: constants.

    Under ``torch.compile(dynamic=True)`` d can be a symbol (which dynamo shows as an int) and
    ``_unavailable`` takes constants only. The answer depends on d only through the backend's
    width limit, so while compiling d is compared with the limit (dynamo guards on the side
    taken, and recompiles when a later call lands on the other) and a width on that side
    stands in for it.
    """
    d = x.shape[-1]
    if torch.compiler.is_compiling():
        limit = _max_width(name)
        d = 1 if limit is None or d <= limit else limit + 1
    return str(x.device), str(x.dtype).removeprefix("torch."), d


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """Maps ``backend`` to a concrete one of "triton", "native", "eager" for tensors like ``x``.

    ``auto`` picks Triton for CUDA tensors and the native extension for CPU tensors, and falls
    back to ``eager`` (which never fails) when those cannot serve the call.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "eager":
        return "eager"
    if backend == "auto":
        candidate = "triton" if x.device.type == "cuda" else "native"
        return candidate if _unavailable(candidate, *_spec(candidate, x)) is None else "eager"
    reason = _unavailable(backend, *_spec(backend, x))
    if reason is not None:
        raise BackendUnavailableError(f"backend={backend!r} cannot run this call: {reason}")
    return backend
