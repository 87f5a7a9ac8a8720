"""The optimizer and learning-rate schedule of the official recipe (arazd/ResidualPrompts,
``prompt_tuner2.py:229-265``): AdamW (eps 1e-8) with the prompt in one parameter group and the
MLP in another, which may take its own learning rate and weight decay (by default the prompt's;
weight decay applies to every parameter, LayerNorm and biases included, as there). The official
code trains at a constant rate; ``linear`` decays to 0 at the last step instead. Both start with
``warmup_steps`` of linear warmup (0 by default, as the official)."""

from __future__ import annotations

import torch

from .config import TrainConfig

ADAM_EPS = 1e-8


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """``[prompt group, MLP group]`` (the MLP group is left out when there is no MLP)."""
    encoder = model.prompt_encoder
    prompt = [encoder.prompt]
    mlp = [p for name, p in encoder.named_parameters() if name != "prompt"]
    groups = [{"params": prompt, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if mlp:
        groups.append({
            "params": mlp,
            "lr": cfg.lr if cfg.mlp_lr is None else cfg.mlp_lr,
            "weight_decay": cfg.weight_decay if cfg.mlp_weight_decay is None else cfg.mlp_weight_decay,
        })
    return groups


def build_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=ADAM_EPS)


def lr_lambda(scheduler: str, warmup: int, total: int):
    """The factor on each group's rate at optimizer step ``step`` (0-based): linear warmup over
    ``warmup`` steps, then 1 (``constant``) or a linear decay reaching 0 at ``total``."""
    if scheduler not in ("constant", "linear"):
        raise ValueError(f"lr_scheduler: expected 'constant' or 'linear', got {scheduler!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if scheduler == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor
