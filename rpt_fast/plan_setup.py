"""The run the memory planner and the step-time model describe: :class:`Setup`, one training
configuration per GPU rank, and its input checks. Its own module so the family models
(:mod:`rpt_fast.arch_t5`, :mod:`rpt_fast.arch_decoder`) can take a Setup without importing the
planner that imports them."""

from __future__ import annotations

from dataclasses import dataclass

# NVMe swap buffers: elements of each (DeepSpeed's default size; the run may take larger ones)
# and how many (DeepSpeed's default count; the run's DeepSpeed config sets the same).
NVME_BUFFER_SIZE = 100_000_000
NVME_BUFFER_COUNT = 5


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
    dropout: float | None = None  # None: the backbone config's own rate
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
    if s.dropout is not None and not 0.0 <= s.dropout < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {s.dropout!r}")
    if s.attention not in ("sdpa", "eager"):
        raise ValueError(f"attention: expected 'sdpa' or 'eager', got {s.attention!r}")
