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


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """Maps ``backend`` to a concrete one of "triton", "native", "eager" for tensors like ``x``.

    ``auto`` picks Triton for CUDA tensors and the native extension for CPU tensors, and falls
    back to ``eager`` (which never fails) when those cannot serve the call.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "eager":
        return "eager"
    spec = (str(x.device), str(x.dtype).removeprefix("torch."), int(x.shape[-1]))
    if backend == "auto":
        candidate = "triton" if x.device.type == "cuda" else "native"
        return candidate if _unavailable(candidate, *spec) is None else "eager"
    reason = _unavailable(backend, *spec)
    if reason is not None:
        raise BackendUnavailableError(f"backend={backend!r} cannot run this call: {reason}")
    return backend
