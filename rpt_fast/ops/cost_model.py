"""A roofline cost model of kernel launches, for arguing design choices without a GPU.

Each launch costs ``overhead + max(bytes / bandwidth, flops / tensor_rate)`` where the
bandwidth a launch reaches is limited by how many bytes its programs keep in flight
(Little's law): ``min(peak, min(programs, SMs) * INFLIGHT_BYTES / LATENCY)``. A launch of 14
programs on a 132-SM GPU therefore streams its weights at a fraction of the peak however
few bytes it moves. ``op_floor`` is what the op must do whatever the implementation (bytes
that must move, FLOPs) at the full rates, without launch overheads.

Constants (the ``GPUS`` table): SM counts, HBM bandwidth and dense tensor-core rates from
NVIDIA's datasheets (H200 SXM: 4.8 TB/s, 989 TFLOP/s bf16/fp16, 494 tf32, 67 fp32 without
tensor cores; H100 SXM5: 3.35 TB/s, same rates; A100 SXM4 80 GB: 2.04 TB/s, 312, 156, 19.5).
Achievable fractions: ``BANDWIDTH_EFFICIENCY`` 0.9 (copy kernels reach about 90 % of the HBM
datasheet rate, e.g. 4.3 TB/s on an H200) and ``TENSOR_EFFICIENCY`` 0.8 (large GEMMs reach
about 80 % of the dense rate). ``LATENCY_S`` 0.7 us (loaded DRAM latency of Hopper/Ampere
class GPUs is roughly 0.5-0.8 us) and ``INFLIGHT_BYTES`` 32 KB per program (a cp.async/TMA
pipeline of 2-3 stages of 64-wide tiles) are assumptions, not measurements. Launch overhead:
``LAUNCH_S`` 2.5 us per launch issued from Python (eager), ``GRAPH_LAUNCH_S`` 1.0 us per
kernel replayed from a CUDA graph.

Limits: no caches (every byte a launch touches counts as DRAM traffic once, including fp32
split-K workspaces that in reality mostly stay in L2, and activations re-read by several
programs count once), no tail effects (programs / SMs not an integer), no occupancy (a
program's latency hiding does not depend on its registers), no interference between
launches, no host time: the eager totals assume Python issues launches faster than the GPU
runs them. At prompt shapes it may not: at (10, 768, 400) the Python side of one forward +
backward through the Triton path takes 231-256 us, its launch plans alone 97-117 us (launches
stubbed, CPU tensors, 2-core Xeon, triton 3.9: ``benchmarks/bench_host.py``), before Triton's
launcher, against 21.4 us of modelled GPU time launched eagerly (H200), so without CUDA graphs host
time may set the pace. Measured times should be set beside it (``benchmarks/bench_kernels.py``
does).
"""

from __future__ import annotations

from typing import NamedTuple


class GPU(NamedTuple):
    name: str
    sms: int
    bandwidth: float  # HBM bytes/s, datasheet
    tensor_flops: dict  # dtype name -> dense FLOP/s of tl.dot, datasheet


GPUS = {
    "h200": GPU("H200 SXM", 132, 4.8e12, {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    "h100": GPU("H100 SXM5", 132, 3.35e12, {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    "a100": GPU("A100 SXM4 80GB", 108, 2.039e12, {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
}
BANDWIDTH_EFFICIENCY = 0.9
TENSOR_EFFICIENCY = 0.8
LATENCY_S = 0.7e-6
INFLIGHT_BYTES = 32 * 1024
LAUNCH_S = 2.5e-6
GRAPH_LAUNCH_S = 1.0e-6


class LaunchCost(NamedTuple):
    name: str
    programs: int
    nbytes: int
    flops: int
    bandwidth: float  # bytes/s this launch reaches
    seconds: float  # without launch overhead


def launch_cost(gpu: GPU, name: str, programs: int, nbytes: int, flops: int,
                dot_type: str) -> LaunchCost:
    """Roofline time of one launch of ``programs`` programs (see the module docstring)."""
    peak = gpu.bandwidth * BANDWIDTH_EFFICIENCY
    bandwidth = min(peak, min(programs, gpu.sms) * INFLIGHT_BYTES / LATENCY_S)
    compute = flops / (gpu.tensor_flops[dot_type] * TENSOR_EFFICIENCY)
    return LaunchCost(name, programs, nbytes, flops, bandwidth, max(nbytes / bandwidth, compute))


def total_seconds(costs: list[LaunchCost], graph: bool) -> float:
    """Sum of the launches plus the launch overhead of each (CUDA-graph replay or eager)."""
    per_launch = GRAPH_LAUNCH_S if graph else LAUNCH_S
    return sum(c.seconds + per_launch for c in costs)


def op_cost(op: str, mode: str, M: int, d: int, m: int, e: int) -> tuple[int, int]:
    """(bytes, flops) the op must move and compute, whatever the implementation.

    Shared op (one MLP, M rows) and grouped op (one MLP per row, g = M groups); e is the
    element size, LayerNorm statistics are fp32. Per group the weights are W = 2 m d + m + 3 d
    elements.
      forward:  read x, weights; write y and the saved h (M m) and mean/rstd (2 M fp32)
                bytes = e (2 M d + g W + M m) + 8 M,          FLOPs = 4 M d m
      backward: read dy, x, h, w1, w2, b2, ln_weight, stats; write dx and all weight gradients
                bytes = e (3 M d + M m + g (4 m d + m + 5 d)) + 8 M,   FLOPs = 8 M d m
      full = forward + backward; ``mode`` is "fwd", "bwd" or "full".
    """
    g = M if op == "grouped" else 1
    fwd = (e * (2 * M * d + g * (2 * m * d + m + 3 * d) + M * m) + 8 * M, 4 * M * d * m)
    bwd = (e * (3 * M * d + M * m + g * (4 * m * d + m + 5 * d)) + 8 * M, 8 * M * d * m)
    if mode == "fwd":
        return fwd
    if mode == "bwd":
        return bwd
    return fwd[0] + bwd[0], fwd[1] + bwd[1]


def op_floor(gpu: GPU, op: str, mode: str, M: int, d: int, m: int, e: int, dot_type: str) -> float:
    """Seconds the op needs at least: its bytes at the achievable bandwidth or its FLOPs at the
    achievable tensor rate, whichever is longer; no launch overhead."""
    nbytes, flops = op_cost(op, mode, M, d, m, e)
    return max(nbytes / (gpu.bandwidth * BANDWIDTH_EFFICIENCY),
               flops / (gpu.tensor_flops[dot_type] * TENSOR_EFFICIENCY))
