"""Timers for the kernel benchmarks: median over many repetitions after warm-up.

CUDA: events around each call, do_bench-like (flush nothing; warm-up, then as many reps as fit
the time budget), plus CUDA-graph replay. CPU: time.perf_counter per call."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def cpu_median_ms(fn: Callable[[], object], *, budget_s: float = 0.25, warmup: int = 2,
                  min_reps: int = 5, max_reps: int = 200) -> float:
    """Median wall time of ``fn()`` in ms; reps fill ``budget_s`` (at least ``min_reps``, or 3
    with a single warm-up for calls slower than the budget)."""
    t0 = time.perf_counter()
    fn()
    if time.perf_counter() - t0 > budget_s:
        warmup, min_reps = 0, 3
    for _ in range(warmup - 1):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cuda_median_ms(fn: Callable[[], object], *, budget_s: float = 0.1, warmup: int = 5,
                   min_reps: int = 10, max_reps: int = 1000) -> float:
    """Median device time of ``fn()`` in ms, from CUDA events around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    probe_start, probe_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    probe_start.record()
    for _ in range(3):
        fn()
    probe_end.record()
    torch.cuda.synchronize()
    per_call = max(probe_start.elapsed_time(probe_end) / 3, 1e-3)
    reps = int(min(max_reps, max(min_reps, budget_s * 1e3 / per_call)))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def cuda_graph_ms(fn: Callable[[], object], **kwargs) -> float:
    """Median time of replaying a CUDA graph that captured one ``fn()`` call."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up on a side stream, as capture requires
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return cuda_median_ms(graph.replay, **kwargs)


def median_ms(fn: Callable[[], object], device: torch.device, **kwargs) -> float:
    if device.type == "cuda":
        return cuda_median_ms(fn, **kwargs)
    return cpu_median_ms(fn, **kwargs)


def count_cuda_launches(fn: Callable[[], object]) -> int | None:
    """Kernels one ``fn()`` launches on the GPU (torch.profiler), or None if not countable."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
    except RuntimeError:
        return None
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and "memcpy" not in e.name.lower() and "memset" not in e.name.lower()]
    return len(kernels)
