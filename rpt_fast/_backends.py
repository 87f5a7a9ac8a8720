"""Backend choice: which implementation serves a call, and why another one cannot."""

from __future__ import annotations

import torch

from .ops import BACKENDS, load_backend


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot serve this call; the message says why."""


def _unavailable(name: str, x: torch.Tensor) -> str | None:
    try:
        module = load_backend(name)
    except ImportError as exc:  # triton not installed, for instance
        return f"cannot import the {name} backend ({exc})"
    return module.unavailable_reason(x)


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
        return candidate if _unavailable(candidate, x) is None else "eager"
    reason = _unavailable(backend, x)
    if reason is not None:
        raise BackendUnavailableError(f"backend={backend!r} cannot run this call: {reason}")
    return backend
