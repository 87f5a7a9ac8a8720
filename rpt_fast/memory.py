"""Memory planner: predicts peak GPU and host memory of a residual prompt tuning run on a frozen
backbone before anything is allocated: T5 (:mod:`rpt_fast.arch_t5`) and the decoder-only
families of :mod:`rpt_fast.arch_decoder` (Llama, Mistral, Qwen2, Gemma, Gemma 2, GPT-NeoX,
GPT-2). Pure arithmetic on the architecture. Which of the settings that fit is fastest is
:mod:`rpt_fast.step_time`'s model; the choice among them is :mod:`rpt_fast.train.autoplan`'s, and
the ``rpt-memory`` program and ``rpt-train --plan``, which read a run's flags, live in
:mod:`rpt_fast.train.memory_cli`.

Why: prompt tuning of billion-parameter backbones is limited by memory, not compute; the right
mix of ZeRO-3, parameter offload, live-parameter limits and gradient checkpointing is cheaper to
compute than to find by out-of-memory crashes.

The model (per GPU rank; e = 2 bytes under bf16, 4 under fp32). The family modules give the
exact parameter tensors (N_backbone), the saved activations of one micro-batch and backward's
working memory, each with its derivation; this module adds what every family shares.

Backbone weights on the GPU
    ZeRO stage 0-2: resident, N_backbone e (stages 1-2 partition only the trainable part).
    ZeRO-3: persistent params (numel <= stage3_param_persistence_threshold) stay whole on every
    rank; the rest is partitioned, resident N_np e / world (none with offload to cpu/nvme).
    Gathered for compute (ESTIMATE, fitted to DeepSpeed 0.19's PartitionedParameterCoordinator
    as measured on CPU by benchmarks/check_memory.py): the largest single fetch F_max (the
    embedding / lm_head) plus, when prefetching, up to stage3_max_live_parameters more (prefetched
    parameters stay gathered until the live count reaches that cap), or stage3_max_reuse_distance
    if larger (parameters reused within it are not released); at most N_np:
    gathered = min(N_np, F_max + max(max_live if prefetch > 0 else 0, reuse_distance)) e.
    With the defaults (max_live 1e9) this is most of a T5-XL: lower max_live to save memory.
    rpt-train sets max_live to what the budget leaves after every other term (and prefetch and
    reuse to half of it), so its planned peak is the budget (rpt_fast.train.autoplan).

Trainable part (exact: N_trainable = n_mlp (2 m d + m + 3 d) + num_tokens d, n_mlp = num_tokens
if separate else 1; AdamW): fp32 master + 2 fp32 states (12 bytes/param) partitioned
by world size at ZeRO >= 1 (on the host with Setup(offload_optimizer="cpu")), the working copy (e) and
its gradient (e, + 4 fp32 accumulation under bf16) partitioned at ZeRO >= 2/3. At ZeRO >= 1 the
gradient reduce bucket: ZeRO-3 allocates reduce_bucket_size elements whole (fp32 communication),
stages 1-2 at most the trainable count. NVMe offload pins buffer_count (5) x nvme_buffer_size
elements of swap buffers on the host.

Measured errors (benchmarks/check_memory.py, CPU): parameter counts exact (every family);
activations +1 % to +5 % over seven T5 cases (t5-tiny/t5-small, fp32/bf16, sdpa/eager, one with
the eager attention scores dominating) and -0.3 % to +0.7 % over fifteen decoder-only cases
(every family, sdpa/eager, bf16/fp32, and cases where the eager scores, the log-probs, the MLP,
the norms or sdpa's tensors dominate); no dropout (its CPU masks are in the model dtype, CUDA's
are 1 byte, as modelled); ZeRO-3 gathered bytes +2.5 % with prefetching (t5-tiny and tiny-llama,
fp32, max_live 3e4, prefetch 1e4) and persistent parameters exact. Not checked here: CUDA
kernels' own saved tensors (sdpa on CUDA picks the flash or memory-efficient kernel), memory
under gradient checkpointing, allocator behaviour.

GPU total = allocator peak + CUDA context (ESTIMATE: 0.5 GiB) + 10 % fragmentation (ESTIMATE).
Host (ESTIMATE): offloaded partitions (cpu: N_np e / world per rank; nvme: pinned swap buffers),
offloaded optimizer states, and a per-process baseline of 3 GiB (Python, torch, CUDA libraries).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, replace
from typing import Union

from .arch_decoder import FAMILIES, DecoderArch
from .arch_t5 import T5Arch
from .plan_setup import NVME_BUFFER_COUNT, Setup, check_setup

GIB = 1024**3
CUDA_CONTEXT_BYTES = GIB // 2
FRAGMENTATION = 0.10
HOST_BASELINE_BYTES = 3 * GIB


# A backbone as the planner sees it: T5Arch or DecoderArch (parameter tensors, activations, FLOPs).
Arch = Union[T5Arch, DecoderArch]


def arch_from_config(raw: dict, model: str = "model") -> Arch:
    """The planner's view of a ``config.json``'s content (``model`` names it in errors): T5,
    or a decoder-only family of :data:`rpt_fast.arch_decoder.FAMILIES`."""
    family = raw.get("model_type", "t5")
    if family in ("t5", "mt5", "umt5"):
        return T5Arch.from_config(raw, model)
    if family in FAMILIES:
        return DecoderArch.from_config(raw, model)
    raise ValueError(f"model: the memory planner models T5 and {', '.join(FAMILIES)}; "
                     f"{model!r} is a {family!r} model")


def load_arch(model: str) -> Arch:
    """``model`` is a preset name of rpt_fast.presets or a directory holding a config.json."""
    from .presets import PRESETS

    if model in PRESETS:
        raw = dict(PRESETS[model])
    elif os.path.isdir(model):
        path = os.path.join(model, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model: directory {model!r} has no config.json")
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    else:
        raise ValueError(
            f"model: expected a preset in {tuple(PRESETS)} or a directory with config.json, "
            f"got {model!r}"
        )
    return arch_from_config(raw, model)


def backbone_tensors(a: Arch) -> list[tuple[str, int, int]]:
    """(kind, numel, count) of every distinct backbone parameter tensor, as HF builds them."""
    return a.tensors()


def backbone_params(a: Arch) -> int:
    """Exact parameter count of the backbone (shared tensors once)."""
    return sum(n * c for _, n, c in backbone_tensors(a))


def trainable_params(d: int, s: Setup) -> int:
    """P (num_tokens x d) plus one residual MLP (or one per token when separate)."""
    mlp = 2 * s.bottleneck * d + s.bottleneck + 3 * d
    return s.num_tokens * d + (s.num_tokens if s.separate else 1) * mlp


def resolved(s: Setup, a: Arch) -> Setup:
    """``s`` with the backbone's own dropout rate where it leaves it open (None)."""
    return s if s.dropout is not None else replace(s, dropout=a.dropout)


def activation_terms(a: Arch, s: Setup) -> dict[str, float]:
    """Saved activations of one micro-batch in bytes and backward's working memory (see the
    family's module)."""
    return a.activations(resolved(s, a))


def nonpersistent_numel(a: Arch, threshold: int) -> tuple[int, int]:
    """(largest, total) numel of the backbone tensors ZeRO-3 partitions: those above the
    persistence ``threshold`` (the rest stay whole on every rank)."""
    sizes = [(n, c) for _, n, c in backbone_tensors(a) if n > threshold]
    return max((n for n, _ in sizes), default=0), sum(n * c for n, c in sizes)


def _gathered_numel(a: Arch, s: Setup) -> tuple[int, int]:
    """(persistent numel, peak gathered non-persistent numel) under ZeRO-3."""
    largest, rest = nonpersistent_numel(a, s.param_persistence_threshold)
    persistent = backbone_params(a) - rest
    # Prefetched parameters accumulate up to max_live; the module being computed comes on top.
    kept = max(s.max_live_parameters if s.prefetch_bucket_size > 0 else 0, s.max_reuse_distance)
    return persistent, min(rest, largest + kept)


def plan(s: Setup, arch: Arch | None = None) -> dict:
    """Predicted memory terms of one rank in bytes, and the totals (keys of ``gpu_terms`` and
    ``host_terms`` are stable identifiers; :data:`TERM_NAMES` says them in plain words)."""
    check_setup(s)
    a = arch or load_arch(s.model)
    e = 2 if s.bf16 else 4
    s = resolved(s, a)
    n_back, n_train = backbone_params(a), trainable_params(a.hidden, s)
    world = s.world_size
    gpu: dict[str, float] = {}
    host: dict[str, float] = {"process baseline": HOST_BASELINE_BYTES}
    if s.zero_stage < 3:
        gpu["backbone resident"] = n_back * e
    else:
        persistent, gathered = _gathered_numel(a, s)
        shard = (n_back - persistent) * e / world
        if s.offload_param == "none":
            gpu["backbone partition"] = shard
        elif s.offload_param == "cpu":
            host["backbone partition (pinned)"] = shard
        else:
            host["nvme swap buffers (pinned)"] = NVME_BUFFER_COUNT * s.nvme_buffer_size * e
        gpu["backbone persistent"] = persistent * e
        gpu["backbone gathered (live)"] = gathered * e
    optim = 12 * n_train / (world if s.zero_stage >= 1 else 1)
    if s.offload_optimizer == "none":
        gpu["trainable optimizer (fp32 master+AdamW)"] = optim
    elif s.offload_optimizer == "cpu":
        host["trainable optimizer (fp32 master+AdamW)"] = optim
    gpu["trainable params"] = n_train * e / (world if s.zero_stage == 3 else 1)
    grad_bytes = e + (4 if s.bf16 else 0)
    gpu["trainable grads"] = n_train * grad_bytes / (world if s.zero_stage >= 2 else 1)
    if s.zero_stage >= 1:  # the gradient bucket, allocated whole; gradients travel in fp32
        bucket = n_train if s.reduce_bucket_size is None else s.reduce_bucket_size
        gpu["gradient reduce bucket (fp32)"] = 4 * (bucket if s.zero_stage == 3 else min(bucket, n_train))
    gpu.update(activation_terms(a, s))
    allocated = sum(gpu.values())
    device_total = allocated * (1 + FRAGMENTATION) + CUDA_CONTEXT_BYTES
    return {
        "setup": asdict(s),
        "arch": {"family": a.family, **asdict(a)},
        "backbone_params": n_back,
        "trainable_params": n_train,
        "gpu_terms": gpu,
        "gpu_allocated_peak": allocated,
        "gpu_total": device_total,
        "host_terms": host,
        "host_total": sum(host.values()),
    }


_UNITS = {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> float:
    """'8GB', '16 GiB', '500MB', '1.5e10B' -> bytes. A unit is required (a bare '8' would be 8
    bytes, never what is meant); GB and GiB both mean 2**30 here, as GPUs are sold."""
    m = re.fullmatch(r"\s*((?:\d+\.?\d*|\.\d+)(?:E[+-]?\d+)?)\s*(B|[KMGT]I?B?)\s*", str(text).upper())
    if not m:
        raise ValueError(f"--gpu-memory: expected a size with a unit (B, KB, MB, GB, TB; KiB ... TiB), "
                         f"like '80GB', got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)[0]]


def _size(n: float) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1 (a tiny model's terms are
    KiB, not "0.00 GiB")."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:8.2f} {unit}"
    return f"{n:8.0f} B  "


def format_count(n: int) -> str:
    """An exact count with its size in words: '8,030,261,248 (8.03 billion)'."""
    for unit, scale in (("billion", 1e9), ("million", 1e6), ("thousand", 1e3)):
        if n >= scale:
            return f"{n:,} ({n / scale:.3g} {unit})"
    return f"{n:,}"


# What each term of a plan is, in the words the printed plan uses.
TERM_NAMES = {
    "backbone resident": "backbone weights (whole on every GPU)",
    "backbone partition": "this GPU's share of the backbone weights",
    "backbone persistent": "small backbone tensors kept whole (norms, biases)",
    "backbone gathered (live)": "backbone weights gathered for compute",
    "trainable optimizer (fp32 master+AdamW)": "prompt optimizer state (fp32 copy, AdamW)",
    "trainable params": "prompt and MLP weights",
    "trainable grads": "prompt and MLP gradients",
    "activations": "activations kept for backward",
    "backward_workspace": "working memory of backward",
    "gradient reduce bucket (fp32)": "DeepSpeed's gradient reduce bucket (fp32)",
    "process baseline": "Python, torch and CUDA libraries",
    "backbone partition (pinned)": "this GPU's share of the backbone (offloaded)",
    "nvme swap buffers (pinned)": "NVMe swap buffers (pinned)",
}


def format_plan(p: dict) -> str:
    """The plan as text, each term named in plain words (``TERM_NAMES``)."""
    s = p["setup"]
    micro = math.ceil(s["batch_size"] / s["gradient_accumulation"])
    offload = {"none": "on the GPU", "cpu": "offloaded to CPU memory", "nvme": "offloaded to NVMe"}
    lines = [
        f"{s['model']}: {format_count(p['backbone_params'])} frozen backbone parameters, "
        f"{format_count(p['trainable_params'])} trainable",
        f"  per GPU: batch {s['batch_size']} ({micro} at a time), input {s['source_length']} + "
        f"{s['num_tokens']} prompt tokens, target {s['target_length']}, {'bf16' if s['bf16'] else 'fp32'}, "
        f"ZeRO stage {s['zero_stage']}, backbone {offload[s['offload_param']] if s['zero_stage'] == 3 else 'on the GPU'}, "
        f"gradient checkpointing {'on' if s['grad_checkpointing'] else 'off'}, {s['world_size']} GPU(s)",
        "  GPU memory per GPU:",
    ]
    lines += [f"    {TERM_NAMES[k]:<52s}{_size(v)}" for k, v in p["gpu_terms"].items()]
    lines.append(f"    {'sum of the above (tensors at the peak)':<52s}{_size(p['gpu_allocated_peak'])}")
    context = f"+ {CUDA_CONTEXT_BYTES / GIB:.1f} GiB CUDA context, + {FRAGMENTATION:.0%} fragmentation"
    lines.append(f"    {'predicted total':<52s}{_size(p['gpu_total'])}   ({context})")
    lines.append("  host memory per GPU process:")
    lines += [f"    {TERM_NAMES[k]:<52s}{_size(v)}" for k, v in p["host_terms"].items()]
    lines.append(f"    {'predicted total':<52s}{_size(p['host_total'])}")
    return "\n".join(lines)
