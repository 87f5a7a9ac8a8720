"""Step-time model: predicted seconds of one optimizer step of a residual prompt tuning run, so
the planner can rank the settings that fit a GPU by speed (:mod:`rpt_fast.train.autoplan`)
instead of by a fixed order. Pure arithmetic on the architecture, the
:class:`~rpt_fast.memory.Setup` and a :class:`Device`, as :mod:`rpt_fast.memory` is.

Why: the settings trade memory for time in different currencies. Gradient checkpointing pays
FLOPs (one more forward); ZeRO-3 pays all-gathers over NVLink; parameter offload pays the whole
backbone over PCIe, twice per micro-batch. For T5-XXL in bf16 on one 40 GB A100 (rpt-train's
default lengths, batch 8) checkpointing recomputes about 27 TFLOP (0.21 s at 40% of 312
TFLOP/s; the blocks' forward again, less than the whole forward) while offload moves about
44 GB over PCIe (1.8 s at 25 GB/s).

The model (one rank, one optimizer step of A = gradient_accumulation micro-batches; e = 2 bytes
under bf16, 4 under fp32; N_np the backbone elements ZeRO-3 partitions)

Compute = FLOPs / (peak x MFU), peak the device's dense bf16 tensor-core rate (fp32: its
non-tensor-core rate; torch runs fp32 matmuls without TF32 unless asked)
    forward   2 FLOPs per multiply-add: 2 x (weights a token passes through) per token, plus the
              attention matmuls (Q K^T and P V: 4 x q_len x k_len x inner per layer)
    backward  the backbone is frozen: no weight gradients (dW = X^T dY), only the activations'
              (dX = dY W^T, the forward's FLOPs again); both operands of the attention matmuls
              are activations, so those cost twice their forward (2.5x under sdpa, whose fused
              kernels recompute Q K^T). Backward ~ forward + attention: a step is about 2x
              forward, not the 3x of full fine-tuning.
    recompute gradient checkpointing runs each block's forward again in backward (not the
              lm_head and loss, not a block's last matmul).
    Exact for the Hugging Face models the planner knows (the family modules, rpt_fast.arch_t5
    and rpt_fast.arch_decoder, say what else they count; tests compare them with torch's
    FlopCounterMode on CPU, eager attention). The prompt MLP's FLOPs and AdamW on it are
    negligible (millions of parameters) and omitted.
Transfers (bytes / effective bandwidth)
    parameter offload (cpu, nvme): ZeRO-3 fetches every partitioned block twice per
              micro-batch, for forward and for backward (under checkpointing the recomputed
              forward and the backward of a block share one fetch), each time copying this
              rank's partition host -> device: 2 A N_np e / world over PCIe; with nvme the same
              bytes are first read from NVMe (never written: the backbone is frozen).
    ZeRO-3 all-gather (world > 1): the same two fetches gather the other ranks' partitions:
              2 A N_np e (world - 1) / world at the all-gather bus bandwidth: the device's
              NVLink within a node of GPUS_PER_NODE, the network per GPU beyond it.
    trainable gradients (world > 1): one fp32 all-reduce of P and the MLP per step,
              2 (world - 1) / world x 4 N_trainable bytes.
    optimizer offload (cpu): fp32 gradients to the host and the updated e-byte parameters back,
              N_trainable (4 + e) / world bytes over PCIe per step.
Total = the sum of the terms: no overlap is assumed. DeepSpeed prefetching overlaps part of the
gathers and copies with compute, so a real step lies between the largest term and the sum; the
sum ranks settings conservatively against the ones that move bytes.

The constants are peak rates from datasheets and effective bandwidths from common measurements
(sources beside each); MFU (model FLOPs utilisation, the fraction of peak the step's matmuls
achieve) is an assumption. No GPU rate was measured by this project (no GPU has been lent to it
yet; the CPU ranks' rate comes from a CPU step it measured). Ranking needs the ratios right more
than the absolute times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .memory import Arch, Setup, nonpersistent_numel, trainable_params

# Model FLOPs utilisation assumed for the frozen backbone's forward and backward. Large dense
# transformer training reaches 40-52% of A100 peak (Megatron-LM, Narayanan et al., SC'21) and
# 46% MFU (PaLM, Chowdhery et al. 2022); prompt tuning runs small per-GPU batches of the same
# matmuls, so the lower end.
MFU = 0.40
# One PCIe Gen4 NVMe SSD: 7 GB/s sequential read on datasheets (e.g. Samsung 990 Pro 7.45 GB/s);
# DeepSpeed's aio with 1 MiB blocks through pinned swap buffers reaches less.
NVME_BYTES_PER_S = 5e9
# Beyond one node the all-gather crosses the network: one 400 Gb/s NDR InfiniBand NIC per GPU
# (as DGX H100 has) is 50 GB/s, about 40 GB/s achieved by NCCL's bus bandwidth.
GPUS_PER_NODE = 8
NETWORK_BYTES_PER_S = 40e9


@dataclass(frozen=True)
class Device:
    """What the step-time model needs of a GPU (rates per second, bytes in base 10)."""

    name: str
    memory_gb: float  # as sold (rpt-memory reads "80GB" as 80 GiB, see memory.parse_bytes)
    bf16_flops: float  # dense (no 2:4 sparsity) bf16 tensor-core peak
    fp32_flops: float  # fp32 peak without tensor cores
    pcie: float  # effective host <-> device bytes/s with pinned buffers
    interconnect: float  # NCCL all-gather bus bandwidth between the GPUs of one node


# Peaks: NVIDIA datasheets (H100 SXM5, H200 SXM, A100 SXM4, L4) and the Ada whitepaper (RTX 4090:
# bf16 with fp32 accumulate). PCIe: Gen5 x16 is 64 GB/s per direction, pinned copies measure
# 50-55 GB/s (cudaMemcpy bandwidthTest); Gen4 x16 is 32 GB/s, measured about 25 GB/s. NVLink:
# nccl-tests all_gather bus bandwidth on 8 GPUs, about 360 GB/s on H100/H200 (NVLink 4, 900 GB/s
# bidirectional) and 230 GB/s on A100 (NVLink 3, 600 GB/s); GPUs without NVLink gather through
# PCIe and the host, about 20 GB/s.
DEVICES: dict[str, Device] = {
    "h100": Device("NVIDIA H100 SXM5 80GB", 80, 989e12, 67e12, 50e9, 360e9),
    "h200": Device("NVIDIA H200 SXM 141GB", 141, 989e12, 67e12, 50e9, 360e9),
    "a100-80gb": Device("NVIDIA A100 SXM4 80GB", 80, 312e12, 19.5e12, 25e9, 230e9),
    "a100-40gb": Device("NVIDIA A100 SXM4 40GB", 40, 312e12, 19.5e12, 25e9, 230e9),
    "l4": Device("NVIDIA L4 24GB", 24, 121e12, 30.3e12, 25e9, 20e9),
    "rtx-4090": Device("NVIDIA GeForce RTX 4090 24GB", 24, 165e12, 82.6e12, 25e9, 20e9),
}
DEFAULT_DEVICE = "h100"
# CPU ranks (DS_ACCELERATOR=cpu): "device" memory is host memory, so offload is a host memcpy
# (~10 GB/s on one socket) and gloo gathers through loopback (~2 GB/s). The rate: a t5-small
# fp32 step (batch 8, 356 + 16 tokens, 0.316 TFLOP by this model) took 3.77 CPU s on one thread
# of this project's Xeon (README, "Training speed against PEFT"): 84 GFLOP/s achieved, so a peak
# of 0.25 TFLOP/s at MFU 0.4; bf16 matmuls are no faster on CPUs without AMX. One thread: a rank
# with more runs faster than predicted. Rough: on CPU ranks only the order of settings matters.
CPU = Device("CPU ranks", 0, 0.25e12, 0.25e12, 10e9, 2e9)

# Patterns of torch.cuda.get_device_name() and the preset they mean, most specific first
# ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "NVIDIA GeForce RTX 4090", "NVIDIA L4"; not L40S).
_NAMES = ((r"H200", "h200"), (r"H100", "h100"), (r"A100.*40GB", "a100-40gb"), (r"A100", "a100-80gb"),
          (r"RTX 4090", "rtx-4090"), (r"\bL4\b", "l4"))


def device_for_name(cuda_name: str) -> str | None:
    """The preset of a CUDA device name (``torch.cuda.get_device_name()``), None if unknown."""
    return next((key for pattern, key in _NAMES if re.search(pattern, cuda_name)), None)


def get_device(name: str) -> Device:
    if name not in DEVICES:
        raise ValueError(f"gpu: expected one of {', '.join(DEVICES)}, got {name!r}")
    return DEVICES[name]


def step_flops(a: Arch, s: Setup) -> dict[str, float]:
    """FLOPs of one optimizer step of backbone ``a``: forward, backward of the activations
    only, recompute (the family module's :meth:`step_flops` says what each counts)."""
    return a.step_flops(s)


def _gather_bandwidth(device: Device, world: int) -> float:
    return device.interconnect if world <= GPUS_PER_NODE else min(device.interconnect, NETWORK_BYTES_PER_S)


def step_time(s: Setup, arch: Arch, device: Device) -> dict:
    """Predicted seconds of one optimizer step by term (see the module docstring), their sum
    ``total``, and the FLOPs and bytes they come from."""
    e = 2 if s.bf16 else 4
    world, steps = s.world_size, s.gradient_accumulation
    flops = step_flops(arch, s)
    rate = (device.bf16_flops if s.bf16 else device.fp32_flops) * MFU
    seconds = {
        "forward": flops["forward"] / rate,
        "backward (activation gradients)": flops["backward"] / rate,
        "recompute (gradient checkpointing)": flops["recompute"] / rate,
    }
    moved = {}
    if s.zero_stage == 3:
        fetched = 2 * steps * nonpersistent_numel(arch, s.param_persistence_threshold)[1] * e
        if s.offload_param != "none":
            moved["parameter offload over PCIe"] = (fetched / world, device.pcie)
        if s.offload_param == "nvme":
            moved["parameter reads from NVMe"] = (fetched / world, NVME_BYTES_PER_S)
        if world > 1:
            moved["ZeRO-3 all-gathers"] = (fetched * (world - 1) / world, _gather_bandwidth(device, world))
    n_train = trainable_params(arch.hidden, s)
    if world > 1:
        moved["trainable gradient all-reduce"] = (2 * (world - 1) / world * 4 * n_train,
                                                  _gather_bandwidth(device, world))
    if s.offload_optimizer != "none":
        moved["optimizer offload over PCIe"] = (n_train * (4 + e) / world, device.pcie)
    seconds.update({k: nbytes / bandwidth for k, (nbytes, bandwidth) in moved.items()})
    return {
        "device": device.name,
        "terms": seconds,
        "total": sum(seconds.values()),
        "flops": flops,
        "bytes": {k: nbytes for k, (nbytes, _) in moved.items()},
    }


def format_seconds(t: float) -> str:
    """'1.23 s', '45.6 ms', '789 us': three significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-6:.3g} us"


def format_step_time(t: dict) -> str:
    """One line: the total and its non-zero terms."""
    terms = ", ".join(f"{k} {format_seconds(v)}" for k, v in t["terms"].items() if v > 0)
    return (f"  estimated step time on {t['device']}: {format_seconds(t['total'])} ({terms}; "
            "step-time model, not measured)")
