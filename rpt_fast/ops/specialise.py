"""Two compiled forms of each Triton kernel, so the AOT check compiles every form that runs.

Triton's launcher specialises a kernel on its integer arguments (1 becomes a constant, a
multiple of 16 gets a divisibility hint) and on the 16-byte alignment of its pointers, and
compiles a new variant for each pattern it meets. Left alone, ordinary shapes (d or m not a
multiple of 16, odd row counts, one split) would run variants nobody compiled ahead of time,
some of which spill. So the patterns are fixed:

* every tensor a launcher hands a kernel is contiguous and 16-byte aligned
  (:func:`aligned_contiguous`): one pointer pattern;
* each kernel is jitted twice (:func:`jit_variants`). Counts (rows, splits, partial rows) are
  never specialised. ``hinted`` specialises the integers derived from d and m (dimensions,
  strides) and runs only when d and m are multiples of 16, so they always get the hint;
  ``plain`` specialises none of them and runs for any other d and m. Strides that are 1 for
  every launch of a kernel stay constant 1 in both.

``rpt_fast.ops.aot`` reads ``unspecialised`` (the names Triton does not specialise) and
``variant`` from each jitted kernel.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import triton

ALIGN_BYTES = 16


class Variants(NamedTuple):
    """One kernel jitted as ``hinted`` (d- and m-derived integers specialised) and ``plain``."""

    hinted: Any
    plain: Any

    def pick(self, shapes_hinted: bool):
        return self.hinted if shapes_hinted else self.plain


def jit_variants(*, counts: tuple = (), shapes: tuple = ()):
    """Decorator: the kernel as :class:`Variants`; ``counts`` are never specialised, ``shapes``
    (the d- and m-derived integers) only in ``hinted``."""

    def wrap(fn) -> Variants:
        hinted = triton.jit(fn, do_not_specialize=list(counts))
        plain = triton.jit(fn, do_not_specialize=list(counts + shapes))
        for jitted, name, names in ((hinted, "hinted", counts), (plain, "plain", counts + shapes)):
            jitted.variant, jitted.unspecialised = name, frozenset(names)
        return Variants(hinted, plain)

    return wrap


def hinted(*dims: int) -> bool:
    """True when every one of ``dims`` is a multiple of 16 (the ``hinted`` kernels' shapes)."""
    for dim in dims:
        if dim % 16:
            return False
    return True


def aligned_contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t`` when contiguous and 16-byte aligned, else a contiguous copy (the caching allocator
    aligns every block): a contiguous view can start anywhere, e.g. ``x[1:]`` with an odd d."""
    if t.is_contiguous() and t.data_ptr() % ALIGN_BYTES == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)
