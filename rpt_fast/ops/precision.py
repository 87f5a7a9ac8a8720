"""Which precision fp32 ``tl.dot`` uses: the one torch's own CUDA matmuls use.

torch >= 2.9 has two APIs for TF32: the legacy ``torch.backends.cuda.matmul.allow_tf32`` and
``fp32_precision`` (per backend, and a global one the per-backend "none" inherits). Once the
new API has been used, reading the legacy flag raises, so the new one is read first.
"""

from __future__ import annotations

import torch


def fp32_matmul_allows_tf32() -> bool:
    """True when torch's CUDA fp32 matmuls may use TF32 under the installed torch's APIs."""
    matmul = torch.backends.cuda.matmul
    level = getattr(matmul, "fp32_precision", None)
    if level is not None:  # torch >= 2.9
        if level == "none":
            level = getattr(torch.backends, "fp32_precision", "none")
        if level != "none":
            return level == "tf32"
    try:
        return bool(matmul.allow_tf32)
    except RuntimeError:  # torch refuses the legacy read after a mix of APIs: treat as unset
        return False


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for ``tl.dot``: fp32 follows torch's matmul setting; fp16/bf16
    inputs ignore it (Triton needs a valid value, "tf32" is its default)."""
    if dtype == torch.float32 and not fp32_matmul_allows_tf32():
        return "ieee"
    return "tf32"
