"""The run's ZeRO configuration and DeepSpeed buffer sizes, chosen from the memory planner
(:mod:`rpt_fast.memory`), the step-time model (:mod:`rpt_fast.step_time`) and the memory of the
device the run is on.

``--zero-stage auto`` / ``--offload-param auto`` (the defaults) take, of the settings predicted
to fit, the one the step-time model predicts fastest: the frozen backbone replicated (ZeRO stage
0: plain data parallel), partitioned (ZeRO-3; several ranks only: on one rank it stores the same
bytes), offloaded to CPU memory (or NVMe, when ``--nvme-path`` is given), each with and without
gradient checkpointing. Recomputing a forward usually costs less than streaming the backbone
over PCIe twice a step, so checkpointing comes before offload where both fit. Flags given
explicitly are kept and only the rest is chosen (``--gradient-checkpointing`` keeps it on; give
both ``--zero-stage`` and ``--offload-param`` to keep it off). The choice, its predicted step
time and the faster settings that did not fit are printed in one line.

Device memory: ``--gpu-memory`` if given, else the CUDA device's total memory, else (CPU ranks)
the machine's RAM shared by the ranks on this node. Step times: the CUDA device's rates (a
preset of :data:`rpt_fast.step_time.DEVICES` by name), an H100's when only ``--gpu-memory``
names a GPU, rough CPU rates on CPU ranks. The planner models T5 and the decoder-only families
of :mod:`rpt_fast.arch_decoder`; for any other family the choice falls back to ZeRO-3 (the
setting that fits most), and says so.

Under ZeRO-3 the same budget sets how many gathered parameters may be live (prefetched or kept
for reuse): :func:`planned_live_parameters`, for the run's world size.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from ..plan_setup import NVME_BUFFER_COUNT, NVME_BUFFER_SIZE
from .config import TrainConfig

# Backbones the planner does not model keep at least this many parameters live (DeepSpeed's
# 1e8 limit was below T5-XXL's 131.6M-element embedding: nothing was prefetched); a modelled
# family's limit is planned from the memory left (planned_live_parameters).
MIN_LIVE_PARAMETERS = 100_000_000
# Parameters at most this large stay whole on every ZeRO-3 rank (DeepSpeed's default 1e5): the
# norms and position biases. 1e6 (T5-small/base attention matrices whole) measured no faster on
# one CPU rank; the planner models what is persistent.
PERSISTENCE_THRESHOLD = 100_000
# The trainable part's gradient bucket is one reduce for all of P and the MLP, capped here.
MAX_REDUCE_BUCKET = 500_000_000


@dataclass(frozen=True)
class ModelSizes:
    """What the DeepSpeed settings need to know about the backbone (no weights loaded)."""

    largest_tensor: int  # numel of the largest backbone parameter (the embedding, usually)
    layer_params: int  # numel of the largest transformer block
    trainable: int  # P and the residual MLP(s)
    modelled: bool  # the planner models this backbone exactly (T5, rpt_fast.arch_decoder.FAMILIES)
    dropout: float = 0.0  # the backbone config's own dropout rate


def model_sizes(cfg: TrainConfig) -> ModelSizes:
    """The backbone's sizes, exact for the families the planner models; for any other family a
    rough guess from its config (embedding, one block of 4 d^2 + 3 d I)."""
    from ..memory import Setup, backbone_tensors, load_arch, trainable_params

    setup = Setup(num_tokens=cfg.num_tokens, bottleneck=cfg.bottleneck, separate=cfg.separate)
    try:
        arch = load_arch(cfg.model)
    except (ValueError, FileNotFoundError):
        arch = None
    if arch is not None:
        largest = max(n for _, n, _ in backbone_tensors(arch))
        return ModelSizes(largest, arch.layer_params(), trainable_params(arch.hidden, setup), True,
                          arch.dropout)
    from .backbone import model_config

    config = model_config(cfg)
    d = int(next(getattr(config, k) for k in ("d_model", "hidden_size", "n_embd") if hasattr(config, k)))
    inner = int(getattr(config, "intermediate_size", None) or 4 * d)
    layer = 4 * d * d + 3 * d * inner
    return ModelSizes(max(config.vocab_size * d, layer), layer, trainable_params(d, setup), False)


def zero3_limits(sizes: ModelSizes, cfg: TrainConfig) -> dict[str, int]:
    """ZeRO-3 live/prefetch/reuse limits: ``--max-live-parameters`` (or the number
    :func:`resolve` planned into it) live, prefetch and reuse half of it. Unplanned (a backbone
    the planner does not model): room for the largest parameter twice over, at least 1e8,
    prefetching one block."""
    if cfg.max_live_parameters is not None:
        live = cfg.max_live_parameters
        return {"max_live_parameters": live, "prefetch_bucket_size": live // 2, "max_reuse_distance": live // 2}
    live = max(MIN_LIVE_PARAMETERS, 2 * sizes.largest_tensor)
    ahead = min(live, max(live // 2, sizes.layer_params))
    return {"max_live_parameters": live, "prefetch_bucket_size": ahead, "max_reuse_distance": ahead}


def planned_live_parameters(cfg: TrainConfig, world_size: int, sizes: ModelSizes, budget: float,
                            on_cuda: bool) -> int:
    """``stage3_max_live_parameters`` for a ZeRO-3 run of ``world_size`` ranks that may use
    ``budget`` bytes per rank: what the budget leaves once everything else is placed.

    The planner (:mod:`rpt_fast.memory`) predicts a rank's peak as ``rest + gathered``, where
    ``rest`` is the per-rank partition (N_np e / world, or none when offloaded), the persistent
    parameters, the trainable part's share, the activations of batch / world examples, and on
    CPU ranks the host terms; ``gathered = min(N_np, F_max + live) e`` (the largest parameter
    F_max being computed, plus ``live`` prefetched or kept). So
    ``live = (allowed - rest(live=0)) / e`` elements, with ``allowed`` the budget less the CUDA
    context and fragmentation the planner adds (on CPU ranks: the budget). More ranks shrink the
    partition and the per-rank batch, leaving more to prefetch. Clamped to at least two
    transformer blocks (prefetch, half of it, takes a whole block; a setting that cannot afford
    that counts as not fitting) and at most N_np - F_max (everything gathered).
    """
    from ..memory import CUDA_CONTEXT_BYTES, FRAGMENTATION, load_arch, nonpersistent_numel, plan

    setup = dataclasses.replace(planner_setup(cfg, world_size, sizes), max_live_parameters=0,
                                prefetch_bucket_size=0, max_reuse_distance=0)
    p = plan(setup)
    if on_cuda:
        rest, allowed = p["gpu_allocated_peak"], (budget - CUDA_CONTEXT_BYTES) / (1 + FRAGMENTATION)
    else:
        rest, allowed = p["gpu_allocated_peak"] + p["host_total"], budget
    largest, total = nonpersistent_numel(load_arch(cfg.model), setup.param_persistence_threshold)
    floor = 2 * sizes.layer_params
    room = int((allowed - rest) // (2 if cfg.bf16 else 4))
    return max(floor, min(room, total - largest))


def reduce_bucket_size(sizes: ModelSizes) -> int:
    """One bucket holding every trainable gradient (instead of DeepSpeed's 5e8 elements)."""
    return min(MAX_REDUCE_BUCKET, max(sizes.trainable, 1_000_000))


def nvme_buffer_size(sizes: ModelSizes, world_size: int) -> int:
    """Elements per NVMe swap buffer: at least one rank's partition of the largest parameter
    (DeepSpeed aborts at model build otherwise), rounded up to a whole million."""
    need = math.ceil(sizes.largest_tensor / world_size)
    return max(NVME_BUFFER_SIZE, -(-need // 1_000_000) * 1_000_000)


def planner_setup(cfg: TrainConfig, world_size: int, sizes: ModelSizes | None = None):
    """The memory planner's description of this (resolved) run, per rank."""
    from ..memory import Setup

    sizes = sizes or model_sizes(cfg)
    limits = zero3_limits(sizes, cfg)
    dropout = sizes.dropout if cfg.backbone_dropout is None else cfg.backbone_dropout
    accumulation = getattr(cfg, "gradient_accumulation_steps", 1)
    return Setup(
        model=cfg.model,
        batch_size=max(1, cfg.batch_size // world_size),
        source_length=cfg.max_input_length,
        target_length=cfg.max_target_length,
        num_tokens=cfg.num_tokens,
        bottleneck=cfg.bottleneck,
        separate=cfg.separate,
        bf16=cfg.bf16,
        zero_stage=cfg.zero_stage if cfg.deepspeed else 0,
        offload_param=cfg.offload_param,
        grad_checkpointing=cfg.gradient_checkpointing,
        world_size=world_size,
        dropout=dropout,
        gradient_accumulation=accumulation,
        reduce_bucket_size=reduce_bucket_size(sizes),
        nvme_buffer_size=nvme_buffer_size(sizes, world_size),
        param_persistence_threshold=PERSISTENCE_THRESHOLD,
        **limits,
    )


def device_memory(cfg: TrainConfig, device, local_world_size: int, gpu: str | None = None) -> tuple[float, str]:
    """(bytes one rank may use, where the number came from): ``--gpu-memory``, else the memory
    of the ``gpu`` preset (rpt-memory's ``--gpu``), else the CUDA device's, else (CPU ranks)
    the host's RAM shared by the ranks on this node."""
    from ..memory import GIB, parse_bytes
    from ..step_time import get_device

    if cfg.gpu_memory:
        return parse_bytes(cfg.gpu_memory), f"--gpu-memory {cfg.gpu_memory}"
    if gpu:
        return get_device(gpu).memory_gb * GIB, f"--gpu {gpu}"
    if device is not None and device.type == "cuda":
        import torch

        total = torch.cuda.get_device_properties(device).total_memory
        return float(total), f"{torch.cuda.get_device_name(device)} total"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total / local_world_size, f"host RAM / {local_world_size} rank(s) on this node"


def step_device(gpu: str | None, device, on_cuda: bool):
    """The :class:`~rpt_fast.step_time.Device` whose rates time the candidates: the ``gpu``
    preset, else the CUDA device's own (by name; an unknown GPU is timed as the default
    preset, an H100), else the default preset when only ``--gpu-memory`` names a GPU, else
    the CPU ranks' rough rates."""
    from ..step_time import CPU, DEFAULT_DEVICE, DEVICES, device_for_name, get_device

    if gpu:
        return get_device(gpu)
    if device is not None and device.type == "cuda":
        import torch

        return DEVICES[device_for_name(torch.cuda.get_device_name(device)) or DEFAULT_DEVICE]
    return DEVICES[DEFAULT_DEVICE] if on_cuda else CPU


def _predicted(cfg: TrainConfig, world_size: int, sizes: ModelSizes, on_cuda: bool) -> float:
    from ..memory import plan

    p = plan(planner_setup(cfg, world_size, sizes))
    # On CPU ranks the device is the host: what the planner puts on the GPU and on the host.
    return p["gpu_total"] if on_cuda else p["gpu_allocated_peak"] + p["host_total"]


# The settings "auto" chooses from, in the order that breaks ties of the step-time model: where
# the frozen backbone lives (replicated, partitioned over the ranks, offloaded to CPU memory or
# NVMe) and whether activations are recomputed. NVMe only when --nvme-path names a folder.
SETTINGS = tuple(
    {"zero_stage": stage, "offload_param": offload, "gradient_checkpointing": ckpt}
    for stage, offload in ((0, "none"), (3, "none"), (3, "cpu"), (3, "nvme"))
    for ckpt in (False, True)
)


def _candidates(cfg: TrainConfig, world_size: int) -> list[dict]:
    """The SETTINGS that agree with the flags given explicitly (``--gradient-checkpointing``
    given keeps it on)."""
    out = []
    for knobs in SETTINGS:
        stage, offload = knobs["zero_stage"], knobs["offload_param"]
        if offload == "nvme" and not cfg.nvme_path:
            continue
        if world_size == 1 and cfg.zero_stage == "auto" and (stage, offload) == (3, "none"):
            continue  # one rank: ZeRO-3 alone stores what stage 0 does
        if (cfg.zero_stage not in ("auto", stage) or cfg.offload_param not in ("auto", offload)
                or (cfg.gradient_checkpointing and not knobs["gradient_checkpointing"])):
            continue
        out.append(dict(knobs))
    if not out:  # explicit flags outside SETTINGS (stage 1/2): only fill the rest
        stage = cfg.zero_stage if cfg.zero_stage != "auto" else 3
        offload = cfg.offload_param if cfg.offload_param != "auto" else "none"
        out.append({"zero_stage": stage, "offload_param": offload if stage == 3 else "none",
                    "gradient_checkpointing": cfg.gradient_checkpointing})
    return out


def _describe(knobs: dict) -> str:
    stage = knobs["zero_stage"]
    text = "ZeRO stage 0 (no partitioning)" if stage == 0 else f"ZeRO stage {stage}"
    if knobs["offload_param"] != "none":
        text += f" + parameter offload to {knobs['offload_param']}"
    if knobs["gradient_checkpointing"]:
        text += " + gradient checkpointing"
    return text


def _with_planned_limits(cfg: TrainConfig, world_size: int, sizes: ModelSizes, budget: float,
                         on_cuda: bool) -> TrainConfig:
    """``cfg`` with ZeRO-3's live-parameter limit planned (:func:`planned_live_parameters`)
    unless given or not ZeRO-3."""
    if cfg.zero_stage != 3 or cfg.max_live_parameters is not None:
        return cfg
    live = planned_live_parameters(cfg, world_size, sizes, budget, on_cuda)
    return dataclasses.replace(cfg, max_live_parameters=live)


def _describe_limits(before: TrainConfig, after: TrainConfig) -> str:
    if before.max_live_parameters is not None or after.max_live_parameters is None:
        return ""
    live = after.max_live_parameters
    return (f"ZeRO-3 keeps up to {live / 1e6:.1f}M gathered parameters live and prefetches "
            f"{live // 2 / 1e6:.1f}M, planned from the memory left (--max-live-parameters overrides)")


@dataclass(frozen=True)
class Candidate:
    """One setting "auto" may choose: the run with it (live limit planned), the memory it is
    predicted to need per rank and its predicted step time (:func:`rpt_fast.step_time.step_time`)."""

    knobs: dict
    cfg: TrainConfig
    need: float
    step: dict

    @property
    def seconds(self) -> float:
        return self.step["total"]


def rank(cfg: TrainConfig, world_size: int, sizes: ModelSizes, budget: float, on_cuda: bool,
         device_model) -> list[Candidate]:
    """Every candidate setting of ``cfg`` (:func:`_candidates`), fastest first by the
    step-time model on ``device_model`` (ties in SETTINGS order), whether it fits or not."""
    from ..memory import load_arch
    from ..step_time import step_time

    arch = load_arch(cfg.model)
    out = []
    for knobs in _candidates(cfg, world_size):
        candidate = _with_planned_limits(dataclasses.replace(cfg, **knobs), world_size, sizes, budget, on_cuda)
        need = _predicted(candidate, world_size, sizes, on_cuda)
        step = step_time(planner_setup(candidate, world_size, sizes), arch, device_model)
        out.append(Candidate(knobs, candidate, need, step))
    return sorted(out, key=lambda c: c.seconds)


def resolve(cfg: TrainConfig, world_size: int, device=None, local_world_size: int = 1,
            gpu: str | None = None) -> tuple[TrainConfig, str]:
    """``cfg`` with ``zero_stage``/``offload_param`` (and, when not given, gradient
    checkpointing) chosen: the fastest candidate by the step-time model that is predicted to
    fit the device memory (else the one needing the least), under ZeRO-3 with the
    live-parameter limit planned for ``world_size`` ranks (the run's actual world size); and
    the one-line reason ("" when nothing was chosen). ``gpu``: a :data:`rpt_fast.step_time.DEVICES`
    preset for the memory and rates (rpt-memory's ``--gpu``)."""
    if not cfg.deepspeed:
        return dataclasses.replace(cfg, zero_stage=0, offload_param="none"), ""
    choose = cfg.zero_stage == "auto" or cfg.offload_param == "auto"
    if not choose and (cfg.zero_stage != 3 or cfg.max_live_parameters is not None):
        return cfg, ""
    sizes = model_sizes(cfg)
    if not sizes.modelled:
        if not choose:
            return cfg, ""
        candidates = _candidates(cfg, world_size)
        knobs = next((k for k in candidates if k["zero_stage"] == 3), candidates[-1])
        return dataclasses.replace(cfg, **knobs), (
            f"{_describe(knobs)}: the memory planner does not model this backbone's family, so the "
            "setting that fits most was taken (set --zero-stage / --offload-param to choose)")
    budget, source = device_memory(cfg, device, local_world_size, gpu)
    # --gpu-memory (or --gpu) names a GPU's memory (e.g. planning on a login node): the GPU side counts
    on_cuda = bool(cfg.gpu_memory or gpu) or (device is not None and device.type == "cuda")
    if not choose:
        planned = _with_planned_limits(cfg, world_size, sizes, budget, on_cuda)
        return planned, f"{_describe_limits(cfg, planned)} ({budget / 2**30:.1f} GiB, {source})"
    from ..step_time import format_seconds

    device_model = step_device(gpu, device, on_cuda)
    ranked = rank(cfg, world_size, sizes, budget, on_cuda, device_model)
    fitting = [c for c in ranked if c.need <= budget]
    chosen = fitting[0] if fitting else min(ranked, key=lambda c: c.need)
    verdict = "fits" if fitting else "does NOT fit (nothing predicted to fit: the one needing least memory was taken)"
    faster = "; ".join(f"{_describe(c.knobs)} needs {c.need / 2**30:.1f} GiB ({format_seconds(c.seconds)})"
                       for c in ranked if c.seconds < chosen.seconds and c.need > budget)
    limits = _describe_limits(cfg, chosen.cfg)
    reason = (f"{_describe(chosen.knobs)}: predicted {chosen.need / 2**30:.1f} GiB per rank {verdict} in "
              f"{budget / 2**30:.1f} GiB ({source}), about {format_seconds(chosen.seconds)} per step on "
              f"{device_model.name} (step-time model)"
              f"{'; faster but too large: ' + faster if faster else ''}; "
              f"{limits + '; ' if limits else ''}--zero-stage / --offload-param override")
    return chosen.cfg, reason
