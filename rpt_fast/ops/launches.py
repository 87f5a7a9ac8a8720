"""One kernel launch as data: what the launchers run, the cost model prices and the AOT check
compiles, so the three can never disagree about grids, configs or specialisation."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Launch:
    """``kernel[grid](**args, **constexprs, num_warps=, num_stages=, **options)`` plus its
    modelled cost (``options``: further compile options, such as ``maxnreg``).

    ``nbytes`` counts each tensor the launch reads or writes once (DRAM traffic if nothing is
    cached; ``workspace_bytes`` is the part of it that is fp32 split-K partials, small enough to
    stay in L2); ``flops`` counts 2 per multiply-add.
    """

    name: str
    kernel: Any
    grid: tuple
    args: dict
    constexprs: dict
    num_warps: int
    num_stages: int
    nbytes: int = 0
    flops: int = 0
    workspace_bytes: int = 0
    weight_reading: bool = False  # reads W1 or W2 (the launches that must fill the GPU)
    options: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    @property
    def programs(self) -> int:
        return math.prod(self.grid)

    def __call__(self) -> None:
        if self.programs == 0:  # no rows: nothing to launch (CUDA rejects empty grids)
            return
        self.kernel[self.grid](**self.args, **self.constexprs, num_warps=self.num_warps,
                               num_stages=self.num_stages, **self.options)


@dataclass
class ZeroFill(Launch):
    """``args["out"].zero_()``: torch's fill kernel, one launch on the current stream (a kernel
    node when captured into a CUDA graph). Not a Triton kernel: the AOT check skips it."""

    def __call__(self) -> None:
        self.args["out"].zero_()


def zero_fill(name: str, out) -> ZeroFill:
    """The launch that zeroes ``out`` (one program: it moves a few bytes)."""
    return ZeroFill(name, None, (1,), {"out": out}, {}, 0, 0, nbytes=tensor_bytes(out))


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the launch plans. ``triton.cdiv`` (and ``triton.next_power_of_2``) are
    constexpr functions, 1.7 us per call from Python on triton 3.6 and 3.9: the 21-28 calls of a
    forward + backward plan cost 35-50 us of host time, paid on every eagerly launched call."""
    return -(-a // b)


_NBYTES = operator.attrgetter("nbytes")


def tensor_bytes(*tensors) -> int:
    """Bytes of the given tensors (each counted once). Priced on every launch plan, so one
    attribute read per tensor: 0.54 us for five tensors, 0.95 us as numel() * element_size()."""
    return sum(map(_NBYTES, tensors))
