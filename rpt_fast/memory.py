"""Memory planner: predicts peak GPU and host memory of a residual prompt tuning run on a frozen
T5 before anything is allocated, and suggests settings that fit a GPU. Pure arithmetic on the
architecture: the ``rpt-memory`` program and ``rpt-train --plan``, which read a run's flags,
live in :mod:`rpt_fast.train.memory_cli`.

Why: T5-XL/XXL prompt tuning is limited by memory, not compute; the right mix of ZeRO-3,
parameter offload, live-parameter limits and gradient checkpointing is cheaper to compute than
to find by out-of-memory crashes.

The model (per GPU rank; e = 2 bytes under bf16, 4 under fp32; B batch, S' = source length +
num_tokens, T target length; d, H, d_kv (inner = H d_kv), d_ff, V, L_enc, L_dec from the config)

Parameters (exact: counted from the config as Hugging Face builds ``T5ForConditionalGeneration``;
tests check them against real models)
    N_backbone = V d (shared embedding) + V d (lm_head, unless tied: transformers 5 ties T5
                 always, 4.x honours tie_word_embeddings; the installed one decides)
               + L_enc (4 d inner + F + 2 d) + L_dec (8 d inner + F + 3 d) + 2 d
               + 32 H (relative attention buckets, first layer of each stack)
    with F = 3 d d_ff (gated-gelu) or 2 d d_ff (relu).
    N_trainable = n_mlp (2 m d + m + 3 d) + num_tokens d, n_mlp = num_tokens if separate else 1.

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

Trainable part (exact sizes; AdamW): fp32 master + 2 fp32 states (12 bytes/param) partitioned
by world size at ZeRO >= 1 (on the host with Setup(offload_optimizer="cpu")), the working copy (e) and
its gradient (e, + 4 fp32 accumulation under bf16) partitioned at ZeRO >= 2/3. At ZeRO >= 1 the
gradient reduce bucket: ZeRO-3 allocates reduce_bucket_size elements whole (fp32 communication),
stages 1-2 at most the trainable count. NVMe offload pins buffer_count (5) x nvme_buffer_size
elements of swap buffers on the host.

Activations (ESTIMATE of the saved-for-backward tensors of Hugging Face T5 with frozen weights,
whose linear inputs are not saved; checked on CPU against saved-tensor hooks). The gradient flows
from the loss to the prompt at the encoder input, so every encoder layer saves, per token,
    RMSNorm x2: (4 + e if bf16 else 4) d + 4      q, k, v: 3 inner e
    attention, "sdpa": out inner e + 4 H, plus the (B, H, S', S') position bias once per stack;
               "eager": softmax out e H S' (+ with dropout p: a mask (1 byte on CUDA) and the
               dropped probs e H S'); transformers 5 takes the softmax in the model dtype (4.x in
               fp32: 4 more bytes per score)
    gated-gelu FF: 6 d_ff e (tanh GELU's intermediates, the gate and the product), relu: 2 d_ff e
    dropout masks (p > 0): 2 d + d_ff bytes
and every decoder layer the same over T tokens with a cross attention (q: inner e per target
token, k, v: 2 inner e per source token; scores over S'), except that the first decoder layer's
self-attention block and the norm before its cross attention save nothing (their input needs no
gradient); position biases (sdpa) are saved once per stack. The loss saves fp32 log-probs,
4 V per target token. Gradient checkpointing keeps e d per token per layer plus one layer's
activations while it is recomputed. Backward working memory (ESTIMATE): twice the largest
layer's activations plus the logits' gradient, 4 B T V.

Measured errors (benchmarks/check_memory.py, CPU): activations +1 % to +5 % over six cases
(t5-tiny/t5-small, fp32/bf16, sdpa/eager, no dropout); ZeRO-3 gathered bytes +2.5 % (t5-tiny,
fp32, max_live 3e4, prefetch 1e4). Not checked here: CUDA kernels' own saved tensors (sdpa on CUDA
picks the memory-efficient kernel; dropout masks are 1 byte there), allocator behaviour.

GPU total = allocator peak + CUDA context (ESTIMATE: 0.5 GiB) + 10 % fragmentation (ESTIMATE).
Host (ESTIMATE): offloaded partitions (cpu: N_np e / world per rank; nvme: pinned swap buffers),
offloaded optimizer states, and a per-process baseline of 3 GiB (Python, torch, CUDA libraries).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, replace

GIB = 1024**3
CUDA_CONTEXT_BYTES = GIB // 2
FRAGMENTATION = 0.10
HOST_BASELINE_BYTES = 3 * GIB
NVME_BUFFER_COUNT = 5
NVME_BUFFER_SIZE = 100_000_000


@dataclass(frozen=True)
class Arch:
    """The T5 dimensions the planner needs."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_layers: int
    num_decoder_layers: int
    gated: bool
    tied: bool
    num_buckets: int = 32

    @property
    def inner(self) -> int:
        return self.num_heads * self.d_kv


@dataclass(frozen=True)
class Setup:
    """One training configuration (per-GPU batch)."""

    model: str = "t5-xl"
    batch_size: int = 8
    source_length: int = 512
    target_length: int = 128
    num_tokens: int = 100
    bottleneck: int = 800
    separate: bool = False
    bf16: bool = True
    zero_stage: int = 3
    offload_param: str = "none"
    offload_optimizer: str = "none"
    grad_checkpointing: bool = False
    world_size: int = 1
    dropout: float = 0.1
    attention: str = "sdpa"
    max_live_parameters: int = 1_000_000_000
    prefetch_bucket_size: int = 50_000_000
    param_persistence_threshold: int = 100_000
    max_reuse_distance: int = 1_000_000_000
    gradient_accumulation: int = 1
    # Elements of the trainable gradients' reduce bucket (None: the trainable count, as
    # rpt-train sets it; DeepSpeed's own default is 5e8) and of each NVMe swap buffer.
    reduce_bucket_size: int | None = None
    nvme_buffer_size: int = NVME_BUFFER_SIZE


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def check_setup(s: Setup) -> None:
    """Clear errors for bad input, naming the argument, the expected and the actual value."""
    for name in ("batch_size", "source_length", "target_length", "num_tokens", "bottleneck",
                 "world_size", "gradient_accumulation"):
        _positive_int(name, getattr(s, name))
    for name in ("max_live_parameters", "prefetch_bucket_size", "param_persistence_threshold",
                 "max_reuse_distance", "reduce_bucket_size", "nvme_buffer_size"):
        value = getattr(s, name)
        if value is None and name == "reduce_bucket_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    if s.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage: expected 0, 1, 2 or 3, got {s.zero_stage!r}")
    if s.offload_param not in ("none", "cpu", "nvme"):
        raise ValueError(f"offload_param: expected 'none', 'cpu' or 'nvme', got {s.offload_param!r}")
    if s.offload_param != "none" and s.zero_stage != 3:
        raise ValueError(
            f"offload_param={s.offload_param!r} needs zero_stage 3, got zero_stage {s.zero_stage}"
        )
    if s.offload_optimizer not in ("none", "cpu", "nvme"):
        raise ValueError(
            f"offload_optimizer: expected 'none', 'cpu' or 'nvme', got {s.offload_optimizer!r}"
        )
    if s.offload_optimizer != "none" and s.zero_stage == 0:
        raise ValueError(f"offload_optimizer={s.offload_optimizer!r} needs zero_stage >= 1, got 0")
    if not 0.0 <= s.dropout < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {s.dropout!r}")
    if s.attention not in ("sdpa", "eager"):
        raise ValueError(f"attention: expected 'sdpa' or 'eager', got {s.attention!r}")


def _tied(raw: dict) -> bool:
    """Whether lm_head shares the embedding, as the installed transformers decides: 5.x ties T5
    always, whatever ``tie_word_embeddings`` says; 4.x honours it."""
    try:
        from transformers import T5Config
    except ImportError:
        return bool(raw.get("tie_word_embeddings", True))
    return bool(T5Config.from_dict(raw).tie_word_embeddings)


def load_arch(model: str) -> Arch:
    """``model`` is a preset name of rpt_fast.presets or a directory holding a config.json."""
    from .presets import T5_PRESETS

    if model in T5_PRESETS:
        raw = dict(T5_PRESETS[model])
    elif os.path.isdir(model):
        path = os.path.join(model, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model: directory {model!r} has no config.json")
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    else:
        raise ValueError(
            f"model: expected a preset in {tuple(T5_PRESETS)} or a directory with config.json, "
            f"got {model!r}"
        )
    missing = [k for k in ("vocab_size", "d_model", "d_ff", "num_heads", "num_layers") if k not in raw]
    if missing:
        raise ValueError(f"model: config of {model!r} lacks {missing}; is it a T5 config?")
    proj = raw.get("feed_forward_proj", "relu")
    return Arch(
        vocab_size=int(raw["vocab_size"]),
        d_model=int(raw["d_model"]),
        d_kv=int(raw.get("d_kv", 64)),
        d_ff=int(raw["d_ff"]),
        num_heads=int(raw["num_heads"]),
        num_layers=int(raw["num_layers"]),
        num_decoder_layers=int(raw.get("num_decoder_layers") or raw["num_layers"]),
        gated=proj.startswith("gated-"),
        tied=_tied(raw),
        num_buckets=int(raw.get("relative_attention_num_buckets", 32)),
    )


def backbone_tensors(a: Arch) -> list[tuple[str, int, int]]:
    """(kind, numel, count) of every distinct backbone parameter tensor, as HF builds them."""
    d, i, f = a.d_model, a.inner, a.d_ff
    ff = [("ff", d * f, 3 if a.gated else 2)]
    enc = [("attn", d * i, 4), ("norm", d, 2), *ff]
    dec = [("attn", d * i, 8), ("norm", d, 3), *ff]
    out = [("embedding", a.vocab_size * d, 1 if a.tied else 2), ("norm", d, 2),
           ("bias", a.num_buckets * a.num_heads, 2)]
    out += [(k, n, c * a.num_layers) for k, n, c in enc]
    out += [(k, n, c * a.num_decoder_layers) for k, n, c in dec]
    return out


def backbone_params(a: Arch) -> int:
    """Exact parameter count of ``T5ForConditionalGeneration`` (shared tensors once)."""
    return sum(n * c for _, n, c in backbone_tensors(a))


def trainable_params(d: int, s: Setup) -> int:
    """P (num_tokens x d) plus one residual MLP (or one per token when separate)."""
    mlp = 2 * s.bottleneck * d + s.bottleneck + 3 * d
    return s.num_tokens * d + (s.num_tokens if s.separate else 1) * mlp


def _encoder_layer_bytes_per_token(a: Arch, s: Setup, kv_len: int, e: int) -> float:
    d, i, h = a.d_model, a.inner, a.num_heads
    norm = (4 + (e if e != 4 else 0)) * d + 4
    attn = 3 * i * e + _attention_bytes(a, s, kv_len, e)
    ff = (6 if a.gated else 2) * a.d_ff * e
    masks = (2 * d + a.d_ff) if s.dropout > 0 else 0
    return 2 * norm + attn + ff + masks


def _attention_bytes(a: Arch, s: Setup, kv_len: int, e: int) -> float:
    """Per query token: what the score/probability part of one attention saves."""
    if s.attention == "sdpa":
        return a.inner * e + 4 * a.num_heads
    probs = e * a.num_heads * kv_len
    if s.dropout > 0:
        probs += (1 + e) * a.num_heads * kv_len
    return probs


def activation_terms(a: Arch, s: Setup) -> dict[str, float]:
    """Saved activations of one micro-batch in bytes (see the module docstring)."""
    e = 2 if s.bf16 else 4
    src, tgt = s.source_length + s.num_tokens, s.target_length
    micro = math.ceil(s.batch_size / s.gradient_accumulation)
    d, i = a.d_model, a.inner
    norm = (4 + (e if e != 4 else 0)) * d + 4
    enc_layer = micro * src * _encoder_layer_bytes_per_token(a, s, src, e)
    # decoder: self-attention block over T, cross attention (q over T, k/v over S'), FF over T
    self_block = norm + 3 * i * e + _attention_bytes(a, s, tgt, e) + (d if s.dropout > 0 else 0)
    cross_block = norm + i * e + _attention_bytes(a, s, src, e) + (d if s.dropout > 0 else 0)
    ff_block = norm + (6 if a.gated else 2) * a.d_ff * e + ((d + a.d_ff) if s.dropout > 0 else 0)
    cross_kv = micro * src * 2 * i * e
    dec_layer = micro * tgt * (self_block + cross_block + ff_block) + cross_kv
    dec_first = dec_layer - micro * tgt * self_block - micro * tgt * norm
    bias = 0.0
    if s.attention == "sdpa":  # the (B, H, q, k) position bias + mask, shared by a stack's layers
        bias = micro * a.num_heads * e * (src * src + tgt * tgt + tgt * src)
    head = micro * src * (norm + (d if s.dropout > 0 else 0)) + micro * tgt * norm
    loss = micro * tgt * 4 * a.vocab_size
    layers = a.num_layers * enc_layer + dec_first + (a.num_decoder_layers - 1) * dec_layer
    if s.grad_checkpointing:
        kept = micro * e * d * (a.num_layers * src + a.num_decoder_layers * tgt)
        layers = kept + max(enc_layer, dec_layer)
    workspace = 2 * max(enc_layer, dec_layer) + micro * tgt * 4 * a.vocab_size
    return {"activations": layers + bias + head + loss, "backward_workspace": workspace}


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
    n_back, n_train = backbone_params(a), trainable_params(a.d_model, s)
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
        "arch": asdict(a),
        "backbone_params": n_back,
        "trainable_params": n_train,
        "gpu_terms": gpu,
        "gpu_allocated_peak": allocated,
        "gpu_total": device_total,
        "host_terms": host,
        "host_total": sum(host.values()),
    }


# Candidate settings, cheapest in speed first: (grad_checkpointing, zero_stage, offload, live).
_LADDER = [
    (False, 0, "none", None), (True, 0, "none", None),
    (False, 3, "none", 100_000_000), (True, 3, "none", 100_000_000),
    (False, 3, "cpu", 100_000_000), (True, 3, "cpu", 100_000_000),
    (True, 3, "cpu", 20_000_000), (True, 3, "nvme", 20_000_000),
]


def suggest(s: Setup, gpu_bytes: float, limit: int = 3) -> list[dict]:
    """Settings (fastest first) whose predicted GPU total fits ``gpu_bytes``; micro-batches are
    halved (with gradient accumulation keeping the batch) when nothing fits the full batch."""
    check_setup(s)
    a = load_arch(s.model)
    found = []
    accum = 1
    while accum <= s.batch_size and len(found) < limit:
        for ckpt, stage, offload, live in _LADDER:
            if s.world_size == 1 and stage == 3 and offload == "none":
                continue  # one rank: ZeRO-3 without offload saves nothing over stage 0
            knobs = {"grad_checkpointing": ckpt, "zero_stage": stage, "offload_param": offload,
                     "gradient_accumulation": accum}
            if live is not None:
                knobs.update(max_live_parameters=live, prefetch_bucket_size=live // 2,
                             max_reuse_distance=live // 2)
            p = plan(replace(s, **knobs), a)
            if p["gpu_total"] <= gpu_bytes:
                found.append(p)
                if len(found) == limit:
                    break
        accum *= 2
    return found


def parse_bytes(text: str) -> float:
    """'8GB', '16 GiB', '500MB', '1.5e10' -> bytes (GB and GiB both mean 2**30 here, as GPUs are sold)."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]?I?B?)\s*", str(text).upper())
    if not m:
        raise ValueError(f"--gpu-memory: expected a size like '8GB' or '16GiB', got {text!r}")
    scale = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)[:1] or ""]
    return float(m.group(1)) * scale


def _fmt(n: float) -> str:
    return f"{n / GIB:8.2f} GiB"


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
        f"{s['model']}: {p['backbone_params'] / 1e9:.3f} B frozen backbone parameters, "
        f"{p['trainable_params'] / 1e6:.2f} M trainable",
        f"  per GPU: batch {s['batch_size']} ({micro} at a time), input {s['source_length']} + "
        f"{s['num_tokens']} prompt tokens, target {s['target_length']}, {'bf16' if s['bf16'] else 'fp32'}, "
        f"ZeRO stage {s['zero_stage']}, backbone {offload[s['offload_param']] if s['zero_stage'] == 3 else 'on the GPU'}, "
        f"gradient checkpointing {'on' if s['grad_checkpointing'] else 'off'}, {s['world_size']} GPU(s)",
        "  GPU memory per GPU:",
    ]
    lines += [f"    {TERM_NAMES.get(k, k):<52s}{_fmt(v)}" for k, v in p["gpu_terms"].items()]
    lines.append(f"    {'sum of the above (tensors at the peak)':<52s}{_fmt(p['gpu_allocated_peak'])}")
    context = f"+ {CUDA_CONTEXT_BYTES / GIB:.1f} GiB CUDA context, + {FRAGMENTATION:.0%} fragmentation"
    lines.append(f"    {'predicted total':<52s}{_fmt(p['gpu_total'])}   ({context})")
    lines.append("  host memory per GPU process:")
    lines += [f"    {TERM_NAMES.get(k, k):<52s}{_fmt(v)}" for k, v in p["host_terms"].items()]
    lines.append(f"    {'predicted total':<52s}{_fmt(p['host_total'])}")
    return "\n".join(lines)


def train_flags(p: dict) -> str:
    """The memory settings of plan ``p`` as ``rpt-train`` flags (appended to a command, they
    override its own: argparse keeps a flag's last value)."""
    s = p["setup"]
    flags = [f"--zero-stage {s['zero_stage']}"]
    if s["zero_stage"] == 3:
        flags.append(f"--offload-param {s['offload_param']}")
        flags.append(f"--max-live-parameters {s['max_live_parameters']}")
    if s["grad_checkpointing"]:
        flags.append("--gradient-checkpointing")
    if s["gradient_accumulation"] > 1:
        flags.append(f"--gradient-accumulation-steps {s['gradient_accumulation']}")
    return " ".join(flags)


def format_verdict(p: dict, gpu_bytes: float, suggestions: list[dict]) -> str:
    """Whether plan ``p`` fits a GPU of ``gpu_bytes``, in plain words, and the settings that
    would (fastest first) as flags to paste."""
    need, have = p["gpu_total"] / GIB, gpu_bytes / GIB
    if p["gpu_total"] <= gpu_bytes:
        lines = [f"fits: about {need:.2f} GiB per GPU predicted, {have:.2f} GiB available."]
    else:
        lines = [f"does not fit: about {need:.2f} GiB per GPU predicted, only {have:.2f} GiB available."]
    if suggestions:
        lines.append("settings predicted to fit, fastest first (append to the rpt-train command):")
        lines += [f"  {train_flags(q)}    # about {q['gpu_total'] / GIB:.2f} GiB per GPU" for q in suggestions]
    else:
        lines.append("no setting tried fits; lower --batch-size, --max-input-length or --num-tokens.")
    return "\n".join(lines)


def goals(base: Setup) -> list[dict]:
    """The design goals: T5-XL in 8 GB, T5-XXL in 16 GB (with offload), bf16, batch 8 per GPU,
    input 512, target 128, 100 prompt tokens, T5's dropout 0.1; the other settings from ``base``."""
    out = []
    for model, size in (("t5-xl", 8 * GIB), ("t5-xxl", 16 * GIB)):
        s = replace(base, model=model, batch_size=8, source_length=512, target_length=128, num_tokens=100,
                    bf16=True, dropout=0.1)
        fits = suggest(s, size, limit=1)
        out.append({"model": model, "gpu_memory": size, "fits": bool(fits),
                    "settings": fits[0] if fits else None})
    return out
