"""Hardware ceilings measured in the same run as the kernels, so "distance to the floor" uses
what this machine does now: copy bandwidth, matmul rate per dtype, empty-op/launch time, each
the best of a few measurements."""

from __future__ import annotations

import torch

from _timing import median_ms


def copy_bandwidth_gbps(device: torch.device, nbytes: int, **timing) -> float:
    """Read + write bytes per second of a large device-to-same-device copy, in GB/s."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, **timing)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, **timing) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    ms = median_ms(lambda: a @ b, device, **timing)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def empty_op_us(device: torch.device, **timing) -> float:
    """Time of the smallest op: an in-place add on one element (one kernel launch on CUDA)."""
    x = torch.zeros(1, device=device)
    return median_ms(lambda: x.add_(1), device, **timing) * 1e3


def measure(device: torch.device, dtypes: dict[str, torch.dtype], repeats: int = 3, **timing) -> dict:
    """Ceilings of ``device``, each the best of ``repeats`` measurements (a measurement taken
    while other work shares the machine reads low, and a low ceiling puts the rows above their
    floor); the matmul rate for each ``{name: dtype}``; ``timing`` goes to the timer (budget_s)."""
    big = device.type == "cuda"

    def best(measure_once, better=max):
        return better(measure_once() for _ in range(repeats))

    return {
        "copy_GBps": best(lambda: copy_bandwidth_gbps(device, (1 << 30) if big else (64 << 20), **timing)),
        "matmul_TFLOPs": {name: best(lambda dt=dt: matmul_tflops(device, dt, 8192 if big else 1024, **timing))
                          for name, dt in dtypes.items()},
        "empty_op_us": best(lambda: empty_op_us(device, **timing), min),
        "repeats": repeats,
    }
