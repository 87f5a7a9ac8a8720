"""Kernel backends of the residual encoder ops.

Each backend module (``triton_residual_mlp``, ``native``) exposes the same functions on 2-D,
already-checked inputs with at least one row:

* ``unavailable_reason(x) -> str | None``: why it cannot serve tensors like ``x`` (None: it can).
* ``residual_mlp_forward(x, w1, b1, w2, b2, ln_weight, ln_bias, eps) -> (y, h, z, mean, rstd)``
  with ``h = ReLU(x @ w1.T + b1)`` in x's dtype and the LayerNorm statistics ``mean``/``rstd``
  of each row of ``z = h @ w2.T + b2`` (fp32; fp64 for fp64 inputs on native).
  ``z`` is what the backend keeps of z for its own backward, so the backward reads no weight a
  second time: both backends keep ``h @ w2.T`` (z - b2, (rows, d) in x's dtype; they add b2
  in fp32, so bfloat16 z is never rounded). ``_library`` knows what each backend keeps, for
  the fake implementations.
* ``residual_mlp_backward(dy, x, w1, w2, b2, ln_weight, h, z, mean, rstd)
  -> (dx, dw1, db1, dw2, db2, dln_weight, dln_bias)`` with the forward's h, z, mean, rstd.
* ``grouped_residual_mlp_forward`` / ``grouped_residual_mlp_backward``: the same for the grouped
  ("separate") op, whose weights carry a leading group dimension n (one row per group); its
  Triton kernels keep z itself in fp32, (n, d).

``reference.py`` holds the semantics; the ``eager`` backend is that reference under autograd.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = ("auto", "triton", "native", "eager")

_MODULES = {"triton": "rpt_fast.ops.triton_backend", "native": "rpt_fast.ops.native"}


def load_backend(name: str) -> ModuleType:
    """Imports a kernel backend module by name ("triton" or "native")."""
    return importlib.import_module(_MODULES[name])
