"""``rpt-train``'s self-check before its first step: the prompt encoder's fused op, with the
backend, dtype and shape this run trains and evaluates with, against the float64 reference
(:func:`rpt_fast.selfcheck.check_case`). One line, ``self-check: ...``; a mismatch stops the
run with a one-line error naming ``--backend`` (``--skip-self-check`` skips the check)."""

from __future__ import annotations

import torch

from .._backends import BackendUnavailableError, resolve_backend
from ..modules import _unfused_reason
from ..selfcheck import check_case
from .errors import UsageError
from .rank_errors import failure_on_any_rank, on_every_rank

MAX_GROUPS = 16  # the grouped op checks this many of its MLPs at most: the same kernels, less memory


def self_check(run) -> str:
    """Checks the op ``run`` will train with on its device; prints its line on the main process
    and returns it. Collective: a mismatch on any rank raises :class:`UsageError` on every rank."""
    cfg, info = run.cfg, run.info
    try:
        line, failure = _check(run, cfg, info), None
    except UsageError as exc:  # --backend: not available here, or it disagrees with the reference
        line, failure = None, exc.message
    failure = failure_on_any_rank(info, failure)
    if failure is not None:
        raise on_every_rank(UsageError("backend", failure))
    if info.is_main:
        print(line, flush=True)
    return line


def _check(run, cfg, info) -> str:
    if cfg.reparam == "none":
        return "self-check: skipped, --reparam none trains no MLP"
    # In eval mode: with --prompt-dropout the training steps run the MLP eagerly, but evaluation
    # and the export still run the fused op (the same op either way).
    eager_for = _unfused_reason(cfg.activation, cfg.layer_norm, cfg.residual, False, cfg.prompt_dropout)
    if eager_for is not None:
        return f"self-check: skipped, the prompt MLP runs eagerly for {eager_for} (no fused op)"
    encoder = run.model.prompt_encoder
    dtype = run.autocast_dtype or encoder.prompt.dtype
    d = run.model.backbone.get_input_embeddings().embedding_dim
    device = info.device
    try:
        backend = resolve_backend(cfg.backend, torch.empty((0, d), device=device, dtype=dtype))
    except BackendUnavailableError as exc:
        raise UsageError("backend", str(exc)) from None
    rows = min(cfg.num_tokens, MAX_GROUPS) if cfg.separate else cfg.num_tokens
    result = check_case(backend, cfg.separate, (rows, d, cfg.bottleneck), dtype, device, "training")
    groups = f" ({rows} of its {cfg.num_tokens} MLPs)" if rows < cfg.num_tokens else ""
    if not result.ok:
        raise UsageError("backend", f"self-check failed: {result.describe()}{groups}: the fused op disagrees "
                         "with the float64 reference on this machine; train with another --backend (python -m "
                         "rpt_fast checks them all) or pass --skip-self-check to train anyway")
    return f"self-check: {result.describe()}{groups}, ok"
